"""Learning-rate schedule: linear warm-up, then constant or cosine decay, one step per iteration.

    scheduler = make_scheduler(optimizer, ScheduleConfig(warmup_iterations=2, kind="cosine"), 20)
    for iteration in range(20):
        ...  # rollout, update (optimizer.step() one or more times)
        scheduler.step()

The multiplier scales every parameter group's own learning rate, so per-block ``lr_multipliers``
keep their ratios. It is a pure function of the iteration, so a resumed run rebuilds the
scheduler at its start iteration instead of saving its state.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from lamina.trainer.config import ScheduleConfig

SCHEDULE_KINDS = ("constant", "cosine")


def check_schedule(cfg: ScheduleConfig) -> None:
    """Raises ValueError naming the bad key and its valid values."""
    if cfg.kind not in SCHEDULE_KINDS:
        raise ValueError(f"trainer.schedule.kind={cfg.kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")
    if cfg.warmup_iterations < 0:
        raise ValueError(f"trainer.schedule.warmup_iterations={cfg.warmup_iterations} must be >= 0")
    if not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise ValueError(f"trainer.schedule.min_lr_ratio={cfg.min_lr_ratio} must be in [0, 1]")


def lr_lambda(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier of ``step`` (0-based).

    Warm-up: steps 0..W-1 get (step + 1) / W, so the first step already learns (a zero-lr step
    would waste a whole rollout). After it, ``constant`` gives 1 and ``cosine`` gives
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with p going from 0 at step W to 1 at
    the last step, ``total_steps - 1``; steps past the end stay at ``min_ratio``.

    Args:
        step: the iteration (or optimizer step) about to run.
        total_steps: how many there are in the run.
        warmup_steps: W, the length of the linear warm-up.
        kind: ``constant`` or ``cosine``.
        min_ratio: the cosine floor.
    Returns:
        The multiplier, in [0, 1].
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind {kind!r}; valid: {', '.join(SCHEDULE_KINDS)}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    decay_steps = total_steps - warmup_steps - 1
    if decay_steps > 0:
        progress = min(1.0, (step - warmup_steps) / decay_steps)
    else:  # at most one step after warm-up: it runs at the peak
        progress = 0.0 if step <= warmup_steps else 1.0
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_iterations: int, start_iteration: int = 0
) -> LambdaLR:
    """A ``LambdaLR`` over ``optimizer``'s groups, positioned at ``start_iteration``.

    Call ``scheduler.step()`` once after each iteration. On resume, build it after loading the
    optimizer state with ``start_iteration`` = the next iteration: each group's base lr is its
    ``initial_lr`` (saved with the optimizer state), else its current ``lr``.

    Args:
        optimizer: the optimizer whose groups' lr are scaled.
        cfg: the schedule.
        total_iterations: ``trainer.iterations``.
        start_iteration: the iteration about to run (0 for a fresh run).
    Returns:
        The scheduler; the groups' ``lr`` already holds iteration ``start_iteration``'s value.
    """
    check_schedule(cfg)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])

    def multiplier(step: int) -> float:
        return lr_lambda(step, total_iterations, cfg.warmup_iterations, cfg.kind, cfg.min_lr_ratio)

    # last_epoch = start - 1: LambdaLR's first internal step moves it to ``start``.
    return LambdaLR(optimizer, multiplier, last_epoch=start_iteration - 1)
