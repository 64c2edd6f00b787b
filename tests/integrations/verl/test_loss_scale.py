"""Filler rows change no loss (``loss_scale_scenario.py``, own process): for every loss aggregation
mode, verl's policy loss and gradient norm on 4 real rows equal those on the same rows plus 4
fillers. The ``seq-mean-*`` modes divided by every row of the mini-batch, fillers included (both
numbers halved here), until lamina's engine counted the rows that have a response token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "loss_scale_scenario.py"


@pytest.mark.slow
def test_fillers_do_not_change_the_loss_scale(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(out)], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    }
    for mode, runs in result.items():
        assert runs["rows"] == [4, 8]
        real, padded = runs["real"], runs["with_fillers"]
        assert real["grad_norm"] > 0, mode
        assert padded["grad_norm"] == pytest.approx(real["grad_norm"], rel=1e-5), mode
        assert padded["pg_loss"] == pytest.approx(real["pg_loss"], rel=1e-5, abs=1e-7), mode
