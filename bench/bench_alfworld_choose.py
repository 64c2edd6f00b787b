"""ALFWorld in choose mode: where a lock-step's time goes, and sum vs mean candidate scores.

    python -m bench.bench_alfworld_choose [--steps 6] [--games 16] [--skip-speed] [--skip-scores]

1. Speed. The first ``--steps`` lock-steps of a training rollout (2 tasks x 4 copies, SmolLM2-135M,
   untrained), before issue 9 (every row scored on its own, each candidate packed whole) and after
   (a group's copies in the same state scored once, a common prompt prefix run once, each row's
   candidates packed as a trie), in fresh processes: seconds per lock-step split into the environments'
   step and the policy's scoring, with the prompt length, the number of admissible actions and the
   packed candidate tokens per row. One iteration of 50 lock-steps is extrapolated from these
   (later lock-steps share fewer states than the first ones, so the "after" extrapolation is a
   lower bound).
2. Scores. The planner's (expert) trajectories on ``--games`` held-out games: at every expert
   step, how often the untrained model's highest-scored candidate is the expert's action and the
   expert action's mean probability at T=1, for ``agent.choose_score=sum`` and ``mean``, from
   one scoring pass (the token log-probs give both).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import in_fresh_process
from bench.workload import build, config
from lamina.agents.prompt import EpisodeMemory, build_messages
from lamina.envs.seeds import task_seeds
from lamina.trainer.factories import make_runner

ALFWORLD = ["env=alfworld", "layers=none"]


def lock_steps(optimized: bool, steps: int, *overrides: str) -> dict:
    cfg = config(False, *ALFWORLD, *overrides)
    _, policy = build(cfg, optimized)
    n = cfg.rollout.batch_size * cfg.rollout.group_size
    seeds = [
        s
        for s in task_seeds(cfg.env, cfg.trainer.seed, 0, cfg.rollout.batch_size)
        for _ in range(cfg.rollout.group_size)
    ]
    stats = {"env_s": [], "policy_s": [], "prompt_tokens": [], "candidates": [], "packed_tokens": []}
    rng = torch.Generator().manual_seed(0)
    with make_runner(cfg, n) as runner:
        observations, infos = runner.reset(seeds)
        memories = [EpisodeMemory(task=info["task"]) for info in infos]
        for step in range(steps):
            admissible = [info["admissible_actions"] for info in infos]
            begin = time.perf_counter()
            prompts = [
                policy.encode(
                    build_messages(cfg.agent, memories[t], observations[t], admissible[t], step, 50)
                )
                for t in range(n)
            ]
            choices = policy.choose(prompts, admissible, 1.0, generator=rng)
            stats["policy_s"].append(time.perf_counter() - begin)
            stats["prompt_tokens"].append(np.mean([len(p) for p in prompts]))
            stats["candidates"].append(np.mean([len(a) for a in admissible]))
            stats["packed_tokens"].append(np.mean([sum(map(len, c.candidates)) for c in choices]))
            begin = time.perf_counter()
            next_obs, _, _, _, next_infos = runner.step([c.action for c in choices])
            stats["env_s"].append(time.perf_counter() - begin)
            for t in range(n):
                memories[t].steps.append((observations[t], choices[t].action))
            observations, infos = next_obs, next_infos
    return {k: float(np.mean(v)) for k, v in stats.items()}


def expert_agreement(games: int, *overrides: str) -> dict:
    cfg = config(False, *ALFWORLD, "env.kwargs.split=eval_in_distribution", *overrides)
    _, policy = build(cfg)
    top = {"sum": [], "mean": []}
    prob = {"sum": [], "mean": []}
    with make_runner(cfg, min(games, 8)) as runner:
        for start in range(0, games, runner.num_envs):
            chunk = list(range(start, min(start + runner.num_envs, games)))
            observations, infos = runner.reset(chunk + [chunk[0]] * (runner.num_envs - len(chunk)))
            memories = [EpisodeMemory(task=info["task"]) for info in infos]
            done = [False] * len(chunk)
            for step in range(cfg.env.max_steps):
                experts = runner.expert_actions()
                live = [
                    t
                    for t in range(len(chunk))
                    if not done[t] and experts[t] in infos[t]["admissible_actions"]
                ]
                if not live:
                    break
                prompts = [
                    policy.encode(
                        build_messages(
                            cfg.agent, memories[t], observations[t], infos[t]["admissible_actions"], step, 50
                        )
                    )
                    for t in live
                ]
                conts = [policy.continuation_ids(infos[t]["admissible_actions"]) for t in live]
                token_lps = policy.score(prompts, conts)
                for t, lps in zip(live, token_lps, strict=True):
                    expert = infos[t]["admissible_actions"].index(experts[t])
                    sums = torch.stack([x.sum() for x in lps])
                    means = torch.stack([x.mean() for x in lps])
                    for mode, scores in (("sum", sums), ("mean", means)):
                        top[mode].append(int(torch.argmax(scores)) == expert)
                        prob[mode].append(float(torch.softmax(scores.double(), -1)[expert]))
                actions = [experts[t] if t in live else None for t in range(runner.num_envs)]
                next_obs, _, terminated, truncated, next_infos = runner.step(actions)
                for t in live:
                    memories[t].steps.append((observations[t], experts[t]))
                    observations[t], infos[t] = next_obs[t], next_infos[t]
                    done[t] = bool(terminated[t] or truncated[t])
                for t in range(len(chunk)):
                    if t not in live:
                        done[t] = True
    return {
        "steps": len(top["sum"]),
        **{f"top1_{m}": float(np.mean(top[m])) for m in top},
        **{f"expert_prob_{m}": float(np.mean(prob[m])) for m in prob},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--games", type=int, default=16)
    parser.add_argument("--skip-speed", action="store_true", help="only the scores against the planner")
    parser.add_argument("--skip-scores", action="store_true", help="only the lock-step timings")
    args = parser.parse_args()
    variants = [
        ("before", False, ()),
        ("after", True, ()),
        ("after, no list", True, ("agent.list_actions=false",)),
    ]
    if not args.skip_speed:
        for label, optimized, overrides in variants:
            stats, _ = in_fresh_process(lock_steps, optimized, args.steps, *overrides)
            per_step = stats["env_s"] + stats["policy_s"]
            print(
                f"{label}: {per_step:.1f} s per lock-step "
                f"(env {stats['env_s']:.2f} s, policy {stats['policy_s']:.1f} s); prompt "
                f"{stats['prompt_tokens']:.0f} tokens, {stats['candidates']:.1f} admissible actions, "
                f"{stats['packed_tokens']:.0f} packed candidate tokens per row; 50 lock-steps: "
                f"{50 * per_step / 60:.1f} min",
                flush=True,
            )
    for label, _, overrides in [] if args.skip_scores else variants[1:]:
        result, _ = in_fresh_process(expert_agreement, args.games, *overrides)
        print(label, result, flush=True)


if __name__ == "__main__":
    main()
