"""``lamina train backend=verl`` end to end on the CPU with two ranks (``e2e_scenario.py``, own
process): lamina's CLI -> ``LaminaTaskRunner`` on Ray -> verl's ``init_workers`` (two FSDP2 ranks
over gloo, ``use_remove_padding`` and gradient checkpointing on) -> verl's ``LLMServerManager``
(one rollout replica per rank, HF ``generate`` behind verl's server interface, ``hf_rollout.py``),
its ``LLMServerClient`` and load balancer -> ``StepPPOTrainer.fit`` for 2 iterations with verl's
checkpoints, then a second CLI run that resumes from verl's ``global_step_2`` for a third.

The weight sync is verl's (``CheckpointEngineManager``, backend ``naive``); with
``weight_sync=auto`` and servers that keep their weights, every sync after a worker's first carries
block 1's 9 tensors only, and the servers then hold exactly the trainer's weights (the HF weights
verl saves with each checkpoint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "e2e_scenario.py"


def hf_checkpoint_digest(folder: Path) -> dict[str, list[float]]:
    from safetensors.torch import load_file

    state = {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}
    return {n: [float(t.double().sum()), float(t.double().square().sum())] for n, t in sorted(state.items())}


def same(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    """Equal digests up to float64 summation order (the sums of a 3M-element tensor laid out
    differently in memory differ in the last bit); any trained change is many orders larger."""
    return a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-12) for k in a)


@pytest.mark.slow
def test_lamina_train_backend_verl_two_ranks_and_resume(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path)], capture_output=True, text=True, timeout=1500, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    check_run(tmp_path)


def check_run(out: Path) -> None:
    """What the two CLI runs left in ``out`` (also usable on a kept scenario folder)."""
    tmp_path = out
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 2 iterations, then the resumed run's third: lamina's metrics file continues
    assert [r["iteration"] for r in records] == [0, 1, 2]
    for record in records:
        # 2 tasks x 2 copies x 3 steps (FrozenLake never ends sooner here); 16 rows for the ranks
        assert record["rows"] == 12.0 and record["filler_rows"] == 4.0
        assert 0.0 < record["invalid_action_rate"] < 1.0
    ckpt = run / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("global_step_*")) == [f"global_step_{k}" for k in (1, 2, 3)]
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"

    lines = [json.loads(line) for line in (tmp_path / "syncs.jsonl").read_text().splitlines()]
    split = next(i for i, line in enumerate(lines) if "run_done" in line)
    first, second = lines[:split], [line for line in lines[split + 1 :] if "run_done" not in line]
    names = sorted(first[0]["digest"])
    block = [n for n in names if n.startswith("model.layers.1.")]
    assert len(block) == 9
    # each replica: one full sync at start, then block 1 only after each update
    for run_syncs, steps in ((first, [0, 1, 2]), (second, [2, 3])):
        for replica in (0, 1):
            mine = [s for s in run_syncs if s["replica"] == replica]
            assert [s["global_steps"] for s in mine] == steps
            assert [s["tensors"] for s in mine] == [len(names)] + [9] * (len(steps) - 1)
    # both replicas served requests (verl's load balancer spreads them)
    assert all(max(s["requests"] for s in first if s["replica"] == r) > 0 for r in (0, 1))
    # after each partial sync the servers hold the trainer's weights: verl's HF export of step N
    for s in first[2:] + second[2:]:
        step = s["global_steps"]
        expected = hf_checkpoint_digest(ckpt / f"global_step_{step}" / "actor" / "huggingface")
        assert same(s["digest"], expected), (s["replica"], step)
    # the resumed run starts from verl's checkpoint (model and step), not from the initial weights
    resumed = [s for s in second if s["global_steps"] == 2]
    saved = hf_checkpoint_digest(ckpt / "global_step_2" / "actor" / "huggingface")
    assert len(resumed) == 2 and all(same(s["digest"], saved) for s in resumed)
    assert first[0]["digest"][block[0]] != resumed[0]["digest"][block[0]]
