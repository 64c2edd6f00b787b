"""One update step per layer selection, against training all blocks in the same run.

    python bench/bench_update.py [--model smollm2-135m] [--batch 8] [--tokens 256] [--repeats 2]

One PPO step (verl's clipped loss, AdamW) on a batch of ``--batch`` rows of ``--tokens`` tokens
(half prompt, half response), SmolLM2-135M in fp32 on the CPU. Prints a markdown table: seconds
per step (best of ``--repeats``), ratio to all blocks, trainable parameters.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from lamina.agents.models import ModelConfig, load_model
from lamina.algorithms.losses import LossConfig
from lamina.trainer.layers import apply_layer_selection, find_blocks, parse_layers, trainable_parameter_names
from lamina.trainer.update import UpdateConfig, ppo_update


def time_update(model, spec, rows, repeats: int) -> tuple[float, int]:
    model = copy.deepcopy(model)
    _, blocks = find_blocks(model)
    names = trainable_parameter_names(model, parse_layers(spec, len(blocks)))
    trainable = apply_layer_selection(model, names)
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    prompts, responses, old, advantages = rows
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ppo_update(model, optimizer, trainable, prompts, responses, old, advantages, LossConfig(),
                   UpdateConfig(micro_batch_size=len(prompts)), 0, responses[0].numel())
        best = min(best, time.perf_counter() - start)
    return best, sum(p.numel() for p in trainable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layers", nargs="+", default=["all", "[15]", "[0]", "[29]", "middle:3"])
    args = parser.parse_args()
    model, _ = load_model(ModelConfig(name=args.model))
    gen = torch.Generator().manual_seed(0)
    half = args.tokens // 2
    rows = (
        [torch.randint(10, 40000, (half,), generator=gen) for _ in range(args.batch)],
        [torch.randint(10, 40000, (half,), generator=gen) for _ in range(args.batch)],
        [torch.full((half,), -2.0) for _ in range(args.batch)],
        np.linspace(-1, 1, args.batch),
    )
    results = {spec: time_update(model, spec, rows, args.repeats) for spec in args.layers}
    base = results[args.layers[0]][0]
    header = f"s / update ({args.batch} x {args.tokens} tokens)"
    print(f"| layers | {header} | vs {args.layers[0]} | trainable params |")
    print("| --- | ---: | ---: | ---: |")
    for spec, (seconds, params) in results.items():
        print(f"| `{spec}` | {seconds:.2f} | {seconds / base:.2f}x | {params / 1e6:.1f} M |")


if __name__ == "__main__":
    main()
