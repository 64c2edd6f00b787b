"""``choose`` mode: shared prompt cache (``ChoicePolicy``) vs scoring each candidate with its own prompt.

    python bench/bench_choose.py                          # SmolLM2-135M fp32, 8 prompts x ~400 tokens x 6
    python bench/bench_choose.py --candidates 6 20 --rounds 3

Both sides score the same prompts (ALFWorld-style, built by ``build_messages``) and the same
candidate continuations, in the same process, alternating rounds so other load slows both alike.
The naive side is the training forward (``pack_rows`` + ``response_log_probs``) over one row per
(prompt, candidate), ``--micro-batch`` rows per forward; the shared side runs ``ChoicePolicy.score``
with the same micro-batch of prompts. Prints a Markdown table of the best round of each side (the
machine is shared: the fastest round is the one least slowed by others) and the largest difference
between the two sides' candidate scores.
"""

from __future__ import annotations

import argparse
import time

import torch

from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import ModelConfig, load_model
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.trainer.update import pack_rows, response_log_probs

ROOM = (
    "You are in the middle of a room. Looking quickly around you, you see a bed 1, a desk 2, a desk 1, "
    "a drawer 6, a drawer 5, a drawer 4, a drawer 3, a drawer 2, a drawer 1, a garbagecan 1, "
    "a laundryhamper 1, "
    "a safe 1, a shelf 6, a shelf 5, a shelf 4, a shelf 3, a shelf 2, and a shelf 1. "
)
HISTORY = [("Nothing happens.", "look"), ("On the desk 1, you see a cd 2, and a pencil 1.", "go to desk 1")]
ACTIONS = [
    "go to bed 1",
    "go to desk 1",
    "open drawer 3",
    "take cd 2 from desk 1",
    "put pencil 1 in/on shelf 4",
    "examine laundryhamper 1",
    "go to garbagecan 1",
    "inventory",
    "look",
    "open safe 1",
]


def make_prompts(
    policy: ChoicePolicy, n: int, tokens: int, k: int
) -> tuple[list[list[int]], list[list[str]]]:
    """``n`` prompts of about ``tokens`` tokens (lengths differ a little) with ``k`` candidates each."""
    cfg = PromptConfig(max_observation_chars=10_000)
    actions = [ACTIONS[j % len(ACTIONS)] + ("" if j < len(ACTIONS) else f" {j}") for j in range(k)]
    prompts = []
    for i in range(n):
        target = tokens + 8 * (i - n // 2)
        observation = ROOM
        while True:
            memory = EpisodeMemory(task="put some cd in safe.", steps=list(HISTORY))
            prompt = policy.encode(build_messages(cfg, memory, observation, actions, 2, 50))
            if len(prompt) >= target:
                break
            observation += f"On the shelf {len(observation) % 7}, you see a pen {i}, a book and a mug. "
        prompts.append(prompt)
    return prompts, [actions] * n


@torch.no_grad()
def naive_scores(policy: ChoicePolicy, prompts, continuations, micro_batch: int) -> list[torch.Tensor]:
    """Baseline: one row per (prompt, candidate), each with its full prompt, through the training forward."""
    rows = [(i, c) for i, conts in enumerate(continuations) for c in conts]
    sums = []
    for start in range(0, len(rows), micro_batch):
        chunk = rows[start : start + micro_batch]
        packed = pack_rows(
            [torch.tensor(prompts[i]) for i, _ in chunk],
            [torch.tensor(c) for _, c in chunk],
            policy.tokenizer.pad_token_id,
        )
        log_probs, _ = response_log_probs(policy.model, packed, temperature=1.0)
        sums.extend((log_probs * packed.response_mask).sum(-1).unbind())
    out, pos = [], 0
    for conts in continuations:
        out.append(torch.stack(sums[pos : pos + len(conts)]))
        pos += len(conts)
    return out


def shared_scores(policy: ChoicePolicy, prompts, continuations) -> list[torch.Tensor]:
    return [torch.stack([lp.sum() for lp in lps]) for lps in policy.score(prompts, continuations)]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=400)
    parser.add_argument("--candidates", type=int, nargs="+", default=[6])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--micro-batch", type=int, default=16, help="prompts (shared) / rows (naive) per forward"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(ModelConfig())
    model.eval()
    policy = ChoicePolicy(model, tokenizer, micro_batch_size=args.micro_batch)

    warm_prompts, warm_actions = make_prompts(policy, 1, 64, 2)
    warm_conts = [policy.continuation_ids(a) for a in warm_actions]
    shared_scores(policy, warm_prompts, warm_conts)
    naive_scores(policy, warm_prompts, warm_conts, args.micro_batch)

    lines = [
        f"SmolLM2-135M-Instruct fp32 CPU, {torch.get_num_threads()} threads, micro-batch {args.micro_batch}, "
        f"best of {args.rounds} rounds (s per call)",
        "",
        "| prompts x tokens x candidates | naive: own prompt per candidate (s) | shared prompt cache (s) "
        "| speed-up | max abs score diff |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in args.candidates:
        prompts, actions = make_prompts(policy, args.prompts, args.prompt_tokens, k)
        conts = [policy.continuation_ids(a) for a in actions]
        naive_t, shared_t = [], []
        for _ in range(args.rounds):
            t, naive = timed(lambda: naive_scores(policy, prompts, conts, args.micro_batch))  # noqa: B023
            naive_t.append(t)
            t, shared = timed(lambda: shared_scores(policy, prompts, conts))  # noqa: B023
            shared_t.append(t)
        diff = max(float((a - b).abs().max()) for a, b in zip(naive, shared, strict=True))
        mean_len = sum(map(len, prompts)) / len(prompts)
        tn, ts = min(naive_t), min(shared_t)
        lines.append(
            f"| {len(prompts)} x {mean_len:.0f} x {k} | {tn:.2f} | {ts:.2f} | {tn / ts:.1f}x | {diff:.1e} |"
        )
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
