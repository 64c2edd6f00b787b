"""The update phase (KL reference log-probs and the PPO epoch) with one block vs all blocks.

    python -m bench.bench_update [--quick]

The batch is one rollout of the default job (untrained SmolLM2-135M, 2 TextWorld tasks x 4 copies,
choose mode), the same for every arm. Each arm runs in a fresh process (peak RSS per arm); its time
is the best of two updates from the same starting weights. The one-block arm's frozen-prefix states
come from the rollout in training (its scoring forward keeps them): here the batch's states are
scored once before the clock starts, as the rollout would have.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from bench.common import Row, gib, in_fresh_process
from bench.workload import ONE_BLOCK, build, config, load_batch, rollout_batch
from lamina.trainer.train import capturing_prefix, compute_advantages, update_learner

REPEATS = 2


def time_update(quick: bool, batch_path: str, layers: str, optimized: bool, *overrides: str) -> float:
    cfg = config(quick, f"layers={layers}", *overrides)
    learner, policy = build(cfg, optimized)
    batch = load_batch(Path(batch_path))
    advantages = compute_advantages(cfg, batch)
    start_weights = [p.detach().clone() for p in learner.trainable]
    start_optimizer = copy.deepcopy(learner.optimizer.state_dict())
    best = float("inf")
    for _ in range(REPEATS):
        if learner.prefix is not None and batch.candidates is not None:
            with capturing_prefix(policy, learner.prefix):  # as the rollout's scoring fills it
                policy.candidate_scores([p.tolist() for p in batch.prompt_ids], batch.candidates)
        begin = time.perf_counter()
        update_learner(cfg, learner, policy, batch, advantages)
        best = min(best, time.perf_counter() - begin)
        if learner.prefix is not None:
            learner.prefix.clear()
        with torch.no_grad():
            for p, w in zip(learner.trainable, start_weights, strict=True):
                p.copy_(w)
        learner.optimizer.load_state_dict(start_optimizer)
    return best


def rows(quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        batch_path = str(rollout_batch(quick, Path(tmp) / "batch.pkl"))
        n = len(load_batch(Path(batch_path)))
        one = ONE_BLOCK[quick]
        all_s, all_mem = in_fresh_process(time_update, quick, batch_path, "all", True)
        one_s, one_mem = in_fresh_process(time_update, quick, batch_path, one, True)
        plain_s, plain_mem = in_fresh_process(time_update, quick, batch_path, one, False)
    what = f"update phase ({n} rows, reference + 1 epoch)"
    return [
        Row(
            f"{what}: time, block {one} alone vs all blocks",
            f"all: {all_s:.1f} s",
            f"{one}: {one_s:.1f} s",
            one_s / all_s,
            "<= 0.25x",
            one_s / all_s <= 0.25,
        ),
        Row(
            f"{what}: peak RSS, block {one} alone vs all blocks",
            f"all: {gib(all_mem)}",
            f"{one}: {gib(one_mem)}",
            one_mem / all_mem,
            "<= 0.5x",
            one_mem / all_mem <= 0.5,
        ),
        Row(
            f"{what}: block {one} alone, frozen prefix + shared states vs plain",
            f"plain: {plain_s:.1f} s, {gib(plain_mem)}",
            f"{one_s:.1f} s, {gib(one_mem)}",
            one_s / plain_s,
            "(context)",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in rows(parser.parse_args().quick):
        print(" | ".join(row.cells()))
