"""``StepPPOTrainer.fit`` with two data-parallel ranks on the CPU (``dp_fit_scenario.py``, own process).

verl's ``RayWorkerGroup`` on a local Ray with faked GPUs: two worker processes in one gloo group
(FSDP2 shards every parameter over both), then one worker on the same rows. GiGPO with a KL term (a
reference model), 9 step rows (episodes end after 3, 1, 3 and 2 steps) that neither 2 ranks nor
micro-batches of 2 divide, 2 mini-batches, only block 1 trained.

``use_remove_padding`` and gradient checkpointing are on; both work on the CPU: verl packs the rows
into one sequence and HF's sdpa attention (transformers 5) builds a block-diagonal causal mask from
the packed ``position_ids`` (the scenario checks verl's old log-probs against HF on the padded rows,
within 1e-5), and checkpointing is plain ``torch.utils.checkpoint``. verl's default bf16 FSDP
parameters also run on the CPU; the scenario uses fp32 ones so that dp=2 and dp=1 can be compared
tightly.

Before the fix (log-probs on the unpadded rows) the dp=2 run failed in verl's dispatch:
"expecting td with length divisible by chunks, but got 9 and 2".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "dp_fit_scenario.py"


@pytest.mark.slow
def test_two_ranks_train_what_one_rank_trains(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["rows"] == 9 and result["ranks"] == [2, 1]
    # fit completed its iteration on both; lamina's metrics count the real rows only
    for name, fillers in (("dp2", 7), ("dp1", 3)):  # 16 rows = 2 x 2 x 4 and 12 rows = 2 x 1 x 6
        (record,) = result["records"][name]
        assert record["iteration"] == 0 and record["rows"] == 9.0 and record["filler_rows"] == fillers
        assert record["success_rate"] == 0.5 and record["mean_episode_length"] == 2.25
        checks = result["checks"][name]
        assert checks["log_prob_rows"] == 9 + fillers and checks["old_log_prob_max_err"] < 1e-5
    assert result["syncs"] == [2, 2]  # weights synced before the rollout and after the update
    names = result["names"]
    block = sorted(n for n in names if n.startswith("model.layers.1."))
    assert len(block) == 9
    # FSDP2 sharded each parameter over the two ranks; on every rank, exactly the selected block's
    # shards changed and every other shard is bit-identical
    for numel, rank0, rank1 in zip(result["full_numel"], *result["shard_numel"], strict=True):
        assert rank0 + rank1 == numel and rank0 < numel
    assert [sorted(changed) for changed in result["changed"]] == [block, block]
    assert sorted(result["changed_dp1"][0]) == block
    # same seeds, same rows: the trained tensors equal the dp=1 run's within float tolerance
    diff, moved = result["max_abs_diff_dp2_dp1"], result["max_abs_moved_dp2"]
    for name in names:
        if name in block:
            assert moved[name] > 1e-3 and diff[name] < 1e-5, (name, moved[name], diff[name])
        else:
            assert moved[name] == 0.0 and diff[name] == 0.0, name
    dp2, dp1 = result["records"]["dp2"][0], result["records"]["dp1"][0]
    assert dp2["loss"] == pytest.approx(dp1["loss"], rel=1e-4) and dp2["kl"] == pytest.approx(
        dp1["kl"], rel=1e-4
    )
