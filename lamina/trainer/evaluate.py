"""Held-out evaluation: play each held-out task once and report success with a 95% Wilson interval.

Held-out tasks never overlap the training ones: seed-indexed environments train on seeds below
``env.eval_seed_offset`` (or ``env.train_tasks``) and evaluate from the offset on; environments with
their own splits (ALFWorld, WebShop) evaluate on their held-out split through ``env.eval_kwargs``.

The result keeps every episode (``seeds``, ``won``, ``returns``, ``lengths``, ``task_types``) so
that studies can bootstrap over episodes without replaying them, and breaks success down by task
type where the environment has types (ALFWorld's six; TextWorld's challenge and level).

    lamina eval checkpoint=runs/default eval.episodes=64
    lamina eval model=smollm2-135m env=alfworld eval.episodes=100
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from lamina.envs.runner import EnvGroupRunner
from lamina.trainer.config import RunConfig
from lamina.trainer.factories import make_runner
from lamina.trainer.rollout import Policy, collect_rollouts


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def default_task_type(cfg) -> str:
    """The type of every task of an environment whose infos name none: TextWorld's challenge and
    level, else the environment's name."""
    kwargs = {**cfg.env.kwargs, **cfg.env.eval_kwargs}
    if "challenge" in kwargs:
        level = (kwargs.get("settings") or {}).get("level")
        return f"{kwargs['challenge']}" + (f"/level {level}" if level is not None else "")
    return str(cfg.env.name)


def evaluate(cfg, policy: Policy, runner: EnvGroupRunner, episodes: int, progress=None) -> dict:
    """Plays ``episodes`` held-out tasks (seeds from ``env.eval_seed_offset``) once each, at
    ``eval.temperature`` (0: greedy).

    Returns:
        ``success_rate``, ``ci95`` (Wilson), ``episodes``, ``mean_return``, ``invalid_action_rate``
        (per step), ``mean_length``, ``mean_score`` (where the env reports a ``score``, e.g.
        WebShop), ``by_type`` ({type: success_rate, ci95, episodes, mean_return}), and per episode
        ``seeds``, ``won``, ``returns``, ``lengths``, ``task_types`` (lists in seed order).
    """
    seeds = [cfg.env.eval_seed_offset + i for i in range(episodes)]
    won: list[bool] = []
    returns: list[float] = []
    lengths: list[int] = []
    types: list[str] = []
    scores: list[Any] = []  # the infos' "score", where the env reports one
    steps = invalid = 0
    fallback_type = default_task_type(cfg)
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
            on_step=None if progress is None else progress.on_eval_step,
        )
        won.extend(bool(w) for w in batch.episode_won)
        returns.extend(float(r) for r in batch.episode_returns)
        lengths.extend(int(n) for n in batch.episode_lengths)
        for info in batch.episode_infos or [{}] * len(chunk):
            types.append(str(info.get("task_type") or fallback_type))
            scores.append(info.get("score"))
        steps += len(batch)
        invalid += int((~batch.action_valid).sum())
        if progress is not None:
            progress.advance_eval(len(chunk))
    result = {
        "success_rate": float(np.mean(won)) if won else 0.0,
        "ci95": wilson_interval(int(sum(won)), len(won)),
        "episodes": len(won),
        "temperature": cfg.eval.temperature,
        "mean_return": float(np.mean(returns)) if returns else 0.0,
        "invalid_action_rate": invalid / steps if steps else 0.0,
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
    }
    if any(isinstance(s, int | float) for s in scores):
        result["mean_score"] = float(
            np.mean([float(s) if isinstance(s, int | float) else 0.0 for s in scores])
        )
    result["by_type"] = by_type(types, won, returns)
    result.update(seeds=seeds[: len(won)], won=won, returns=returns, lengths=lengths, task_types=types)
    return result


def by_type(types: list[str], won: list[bool], returns: list[float]) -> dict[str, dict]:
    """Success (with its Wilson interval) and mean return per task type."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, kind in enumerate(types):
        groups[kind].append(i)
    out = {}
    for kind in sorted(groups):
        idx = groups[kind]
        wins = sum(won[i] for i in idx)
        out[kind] = {
            "episodes": len(idx),
            "success_rate": wins / len(idx),
            "ci95": wilson_interval(wins, len(idx)),
            "mean_return": float(np.mean([returns[i] for i in idx])),
        }
    return out


def format_result(result: dict, title: str) -> str:
    """A Markdown table of an evaluation: the totals, then one row per task type."""
    low, high = result["ci95"]
    lines = [
        f"{title}: {result['episodes']} held-out episodes at temperature {result.get('temperature', '?')}",
        "",
        "| tasks | episodes | success | 95% CI | mean return |",
        "| --- | ---: | ---: | --- | ---: |",
        f"| all | {result['episodes']} | {result['success_rate']:.1%} | {low:.1%}-{high:.1%} "
        f"| {result['mean_return']:+.3f} |",
    ]
    for kind, row in result.get("by_type", {}).items():
        lo, hi = row["ci95"]
        lines.append(
            f"| {kind} | {row['episodes']} | {row['success_rate']:.1%} | {lo:.1%}-{hi:.1%} "
            f"| {row['mean_return']:+.3f} |"
        )
    extra = (
        f"invalid actions {result['invalid_action_rate']:.1%} of steps, "
        f"mean length {result['mean_length']:.1f}"
    )
    if "mean_score" in result:
        extra += f", mean score {result['mean_score']:.3f}"
    return "\n".join([*lines, "", extra])


def held_out_eval(cfg: RunConfig, policy: Policy, progress, label: str) -> dict:
    """Held-out evaluation of the current weights (``eval.episodes`` episodes, in chunks of
    ``rollout.batch_size * rollout.group_size``); ``lamina train`` and ``lamina eval`` share it."""
    policy.model.eval()
    progress.start_eval(cfg.eval.episodes, label)
    count = min(cfg.eval.episodes, cfg.rollout.batch_size * cfg.rollout.group_size)
    with make_runner(cfg, count, evaluation=True) as eval_runner:
        return evaluate(cfg, policy, eval_runner, cfg.eval.episodes, progress)


def run_eval(cfg: RunConfig, policy: Policy, progress, iteration: int, label: str) -> dict:
    """``held_out_eval`` as a ``metrics.jsonl`` record of ``iteration``."""
    return {"kind": "eval", "iteration": iteration, **held_out_eval(cfg, policy, progress, label)}
