"""What the exact choose-mode update costs against the old chosen-continuation one.

    python -m bench.bench_choose_update                 # SmolLM2-135M fp32, 8 rows x ~400 tokens x 6
    python -m bench.bench_choose_update --candidates 6 20 --layers [15] all

Both sides run one PPO step (verl's loss, AdamW) on the same rows in the same process, alternating
rounds so that other load slows both alike:
- old: the chosen continuation's token log-probs (``HFPolicy.log_probs``), the biased gradient
  A * grad s_a that lamina used before;
- exact: log pi(a|s) = s_a/T - logsumexp_k(s_k/T), all K candidates re-scored with gradients by the
  shared-prompt packed forward (``ChoicePolicy.log_probs``).
Prints a Markdown table of the best round of each side.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from bench.bench_choose import make_prompts
from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import ModelConfig, load_model
from lamina.agents.policy import HFPolicy
from lamina.algorithms.losses import LossConfig
from lamina.trainer.layers import apply_layer_selection, find_blocks, parse_layers, trainable_parameter_names
from lamina.trainer.rollout import single_step_batch
from lamina.trainer.update import UpdateConfig, ppo_update


def one_step(policy, spec: str, batch, seconds: list[float]) -> None:
    policy = copy.copy(policy)
    policy.model = copy.deepcopy(policy.model)
    _, blocks = find_blocks(policy.model)
    trainable = apply_layer_selection(
        policy.model, trainable_parameter_names(policy.model, parse_layers(spec, len(blocks)))
    )
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    advantages = np.linspace(-1, 1, len(batch))
    start = time.perf_counter()
    ppo_update(policy, optimizer, trainable, batch, advantages, LossConfig(), UpdateConfig(), 1, 1.0)
    seconds.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--candidates", type=int, nargs="+", default=[6])
    parser.add_argument("--layers", nargs="+", default=["[15]"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_model(ModelConfig(name=args.model))
    choice = ChoicePolicy(model, tokenizer, micro_batch_size=args.rows)
    tokens = HFPolicy(model, tokenizer)
    print("| layers | rows x tokens x K | old: chosen tokens (s) | exact: all candidates (s) | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for k in args.candidates:
        prompts, actions = make_prompts(choice, args.rows, args.tokens, k)
        conts = [choice.continuation_ids(a) for a in actions]
        chosen = [i % k for i in range(args.rows)]
        responses = [torch.tensor(c[j]) for c, j in zip(conts, chosen, strict=True)]
        prompt_ids = [torch.tensor(p) for p in prompts]
        old_batch = single_step_batch(prompt_ids, responses, [torch.full((len(r),), -2.0) for r in responses])
        exact_batch = single_step_batch(
            prompt_ids, responses, [torch.tensor([-1.5])] * args.rows, candidates=conts, chosen=chosen
        )
        for spec in args.layers:
            old_s, exact_s = [], []
            for _ in range(args.rounds):
                one_step(tokens, spec, old_batch, old_s)
                one_step(choice, spec, exact_batch, exact_s)
            old, exact = min(old_s), min(exact_s)
            shape = f"{args.rows} x {len(prompts[0])} x {k}"
            print(f"| `{spec}` | {shape} | {old:.2f} | {exact:.2f} | {exact / old:.2f}x |")


if __name__ == "__main__":
    main()
