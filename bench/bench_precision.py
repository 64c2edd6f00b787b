"""bfloat16 vs float32 on this machine: the update phase's time and the log-prob error.

    python -m bench.bench_precision [--quick]

``model.dtype=auto`` picks bfloat16 only on a GPU that supports it; these rows are why it keeps
float32 on a CPU (or would not, on one whose bf16 matmuls are faster). The batch is the default
job's rollout (see ``bench_update``); bf16 runs the frozen blocks in bf16 and the trainable ones
from fp32 master weights under autocast, as in training.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.bench_update import time_update
from bench.common import Row, in_fresh_process
from bench.workload import build, config, keep_first_rows, load_batch, rollout_batch

ROWS = 8


def score_error(quick: bool, batch_path: str) -> float:
    """Largest relative difference of the batch's candidate scores, bf16 vs fp32."""
    batch = load_batch(Path(batch_path))
    prompts = [p.tolist() for p in batch.prompt_ids]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        _, policy = build(config(quick, "layers=all", f"model.dtype={dtype}"))
        scores[dtype] = torch.cat(policy.candidate_scores(prompts, batch.candidates))
    exact = scores["float32"]
    return float(((scores["bfloat16"] - exact).abs() / exact.abs().clamp(min=1e-6)).max())


def rows(quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        # Eight rows: on a CPU without native bf16 matmuls the bf16 side runs an order of magnitude
        # slower (measured: > 30 min for the whole batch), and the ratio needs no more.
        batch_path = str(keep_first_rows(rollout_batch(quick, Path(tmp) / "batch.pkl"), ROWS))
        if load_batch(Path(batch_path)).candidates is None:
            raise ValueError("bench_precision needs a choose-mode batch (agent.mode=choose)")
        fp32_s, _ = in_fresh_process(time_update, quick, batch_path, "all", True, "model.dtype=float32")
        bf16_s, _ = in_fresh_process(time_update, quick, batch_path, "all", True, "model.dtype=bfloat16")
        error, _ = in_fresh_process(score_error, quick, batch_path)
    return [
        Row(
            f"update phase, all blocks, {ROWS} rows: time in bfloat16 (fp32 master weights) vs float32",
            f"fp32: {fp32_s:.1f} s",
            f"bf16: {bf16_s:.1f} s",
            bf16_s / fp32_s,
            "< 1x to use bf16 here",
            None,
        ),
        Row(
            "candidate scores (mean token log-prob): largest relative error, bf16 vs fp32",
            "fp32",
            f"{error:.2e}",
            error / 1e-2,
            "< 1e-2 (ratio: error / 1e-2)",
            error < 1e-2,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in rows(parser.parse_args().quick):
        print(" | ".join(row.cells()))
