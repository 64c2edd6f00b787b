"""Held-out evaluation: play each held-out task once and report success with a 95% Wilson interval.

The result keeps every episode's outcome (``won``, ``returns``, ``seeds``, in seed order) so that
studies can bootstrap over episodes without replaying them.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.envs.runner import EnvGroupRunner
from lamina.trainer.rollout import Policy, collect_rollouts


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def evaluate(cfg, policy: Policy, runner: EnvGroupRunner, episodes: int, progress=None) -> dict:
    """Plays ``episodes`` held-out tasks (seeds from ``env.eval_seed_offset``) once each.

    Returns:
        ``success_rate``, ``ci95`` (Wilson), ``episodes``, ``mean_return``, and per episode
        ``seeds``, ``won`` and ``returns`` (lists in seed order).
    """
    seeds = [cfg.env.eval_seed_offset + i for i in range(episodes)]
    won, returns = [], []
    for start in range(0, episodes, runner.num_envs):
        chunk = seeds[start : start + runner.num_envs]
        batch = collect_rollouts(
            policy,
            runner,
            chunk,
            1,
            max_steps=cfg.env.max_steps,
            prompt_cfg=cfg.agent,
            temperature=cfg.eval.temperature,
            invalid_penalty=cfg.rollout.invalid_penalty,
        )
        won.extend(bool(w) for w in batch.episode_won)
        returns.extend(float(r) for r in batch.episode_returns)
        if progress is not None:
            progress.advance_eval(len(chunk))
    return {
        "success_rate": float(np.mean(won)) if won else 0.0,
        "ci95": wilson_interval(int(sum(won)), len(won)),
        "episodes": len(won),
        "mean_return": float(np.mean(returns)) if returns else 0.0,
        "seeds": seeds[: len(won)],
        "won": won,
        "returns": returns,
    }
