"""The batched rollout vs one model call per episode: choose-mode decisions/s, generate-mode tokens/s.

    python -m bench.bench_rollout [--quick]

The prompts are the states of one default-job rollout (untrained SmolLM2-135M, 2 TextWorld tasks x
4 copies). Batched: one call per lock-step, as the rollout makes it (all episodes' prompts of that
step together; a group's copies in the same state are scored once). Baseline: one call per row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Row, in_fresh_process
from bench.workload import build, config, load_batch, rollout_batch
from lamina.agents.choose import candidate_trie
from lamina.agents.shared_prefix import plan_prefixes


def _by_step(batch) -> list[list[int]]:
    return [list(np.flatnonzero(batch.step_ids == s)) for s in np.unique(batch.step_ids)]


def choose_rates(quick: bool, batch_path: str) -> tuple[float, float]:
    _, policy = build(config(quick, "layers=none"))
    batch = load_batch(Path(batch_path))
    prompts = [p.tolist() for p in batch.prompt_ids]
    policy.candidate_scores(prompts[:1], batch.candidates[:1])  # warm-up
    begin = time.perf_counter()
    for step in _by_step(batch):
        policy.candidate_scores([prompts[i] for i in step], [batch.candidates[i] for i in step])
    batched = len(prompts) / (time.perf_counter() - begin)
    begin = time.perf_counter()
    for i in range(len(prompts)):
        policy.candidate_scores([prompts[i]], [batch.candidates[i]])
    return batched, len(prompts) / (time.perf_counter() - begin)


def prefix_rates(quick: bool, batch_path: str) -> tuple[float, float, float, float]:
    """Choose-mode decisions/s per lock-step with shared prefixes (a common prompt prefix encoded
    once per cluster of rows, each row's candidates as a trie) vs every prompt and candidate whole,
    and the fractions of prompt and of candidate tokens that sharing skips."""
    _, policy = build(config(quick, "layers=none"))
    batch = load_batch(Path(batch_path))
    prompts = [p.tolist() for p in batch.prompt_ids]
    steps = _by_step(batch)
    skipped = total = cand_total = cand_nodes = 0
    for step in steps:
        distinct = {tuple(prompts[i]): i for i in step}  # a state's prompt -> one of its rows
        rows = [list(p) for p in distinct]
        total += sum(len(r) for r in rows)
        for i in distinct.values():
            cand_total += sum(map(len, batch.candidates[i]))
            cand_nodes += len(candidate_trie(batch.candidates[i])[0])
        plan = plan_prefixes(rows)
        if plan is not None:
            skipped += sum(plan.shared) - sum(len(h) for h in plan.heads)
    policy.candidate_scores(prompts[:1], batch.candidates[:1])  # warm-up
    rates = []
    for share in (True, False):
        policy.share_prefixes = share
        begin = time.perf_counter()
        for step in steps:
            policy.candidate_scores([prompts[i] for i in step], [batch.candidates[i] for i in step])
        rates.append(len(prompts) / (time.perf_counter() - begin))
    return rates[0], rates[1], skipped / total, 1 - cand_nodes / cand_total


def generate_rates(quick: bool, batch_path: str) -> tuple[float, float]:
    _, policy = build(config(quick, "layers=none", "agent.mode=generate"))
    batch = load_batch(Path(batch_path))
    prompts = [p.tolist() for p in batch.prompt_ids]
    rates = []
    for calls in (_by_step(batch), [[i] for i in range(len(prompts))]):
        tokens, begin = 0, time.perf_counter()
        for call in calls:
            tokens += sum(len(g.response_ids) for g in policy.generate([prompts[i] for i in call], 1.0))
        rates.append(tokens / (time.perf_counter() - begin))
    return rates[0], rates[1]


def rows(quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(rollout_batch(quick, Path(tmp) / "batch.pkl"))
        n = len(load_batch(Path(path)))
        (c_batched, c_single), _ = in_fresh_process(choose_rates, quick, path)
        (g_batched, g_single), _ = in_fresh_process(generate_rates, quick, path)
        (p_shared, p_plain, p_skipped, c_skipped), _ = in_fresh_process(prefix_rates, quick, path)
    return [
        Row(
            f"choose mode: decisions/s over {n} rollout states, per lock-step vs per episode",
            f"{c_single:.1f}/s",
            f"{c_batched:.1f}/s",
            c_batched / c_single,
            "> 1x (rate)",
            c_batched > c_single,
        ),
        Row(
            f"generate mode: tokens/s over the same {n} prompts, per lock-step vs per episode",
            f"{g_single:.0f}/s",
            f"{g_batched:.0f}/s",
            g_batched / g_single,
            "> 1x (rate)",
            g_batched > g_single,
        ),
        Row(
            f"choose mode: decisions/s, shared prefixes vs whole prompts and candidates (skipped: "
            f"{p_skipped:.0%} of prompt tokens, {c_skipped:.0%} of candidate tokens by the trie)",
            f"{p_plain:.1f}/s",
            f"{p_shared:.1f}/s",
            p_shared / p_plain,
            "> 1x (rate) where prefixes are shared",
            (p_shared > p_plain) if p_skipped + c_skipped > 0 else None,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in rows(parser.parse_args().quick):
        print(" | ".join(row.cells()))
