"""Layer selection inside verl's workers under Ray (``ray_scenario.py``, own process): the worker
process finds lamina's plugin through the ``verl.plugins`` entry point, receives the selection
through the launcher's Ray runtime environment, and ``update_actor`` (sent through verl's
``RayWorkerGroup``) changes only the selected block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "ray_scenario.py"


@pytest.mark.slow
def test_ray_worker_trains_only_the_selected_block(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    block = sorted(n for n in result["names"] if n.startswith("model.layers.2."))
    assert len(block) == 9 and sorted(result["changed"]) == block  # everything else bit-identical
    assert result["grad_norm"] > 0
