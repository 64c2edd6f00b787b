"""One iteration of lamina's per-step verl trainer on the CPU (``fit_scenario.py``, own process):
rollout on TextWorld -> verl old/ref log-probs -> GiGPO via verl's registry -> layer-frozen
``update_actor`` -> weights exported by verl reach the rollout server. What is not verl's here is
said in the scenario's docstring (in-process workers, HF server instead of vLLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "fit_scenario.py"


@pytest.mark.slow
def test_one_step_ppo_iteration_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path)], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    (record,) = result["records"]
    assert record["iteration"] == 0 and record["rows"] == 8.0  # 2 tasks x 2 copies x 2 steps
    assert 0.0 < record["invalid_action_rate"] < 1.0  # the scripted half of the answers are valid
    for key in ("success_rate", "mean_return", "loss", "kl", "rollout_s", "update_s"):
        assert key in record
    assert result["use_reference_policy"]  # KL 0.01: verl's reference worker ran
    # weights synced before the rollout and after the update; the served model changed in the
    # selected block only, every other tensor is bit-identical
    assert result["syncs"] == 2
    block = [n for n in result["names"] if n.startswith("model.layers.1.")]
    assert sorted(result["server_changed"]) == sorted(block)
    # held-out episodes after training, at the evaluation temperature (greedy here)
    assert result["eval"]["episodes"] == 2 and 0.0 <= result["eval"]["success_rate"] <= 1.0
    assert len(result["eval"]["ci95"]) == 2
