"""The one rule for which task seeds an iteration trains on; both backends call it.

Training tasks are the seeds ``0 .. env.train_tasks - 1`` when that is set; else every seed below
``env.eval_seed_offset``, where the held-out tasks start. Only an environment whose held-out tasks
are a split of their own (``env.eval_kwargs``, e.g. ALFWorld's ``valid_seen``) trains on any seed
below 2**31.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ANY_SEED = 2**31 - 1


def training_seed_count(env: Any) -> int:
    """How many seeds training draws from, given an ``env`` config section (a dataclass or a
    ``DictConfig``: ``train_tasks``, ``eval_seed_offset``, ``eval_kwargs``)."""
    if env.train_tasks:
        return int(env.train_tasks)
    return ANY_SEED if env.eval_kwargs else int(env.eval_seed_offset)


def task_seeds(env: Any, seed: int, iteration: int, count: int) -> list[int]:
    """The ``count`` task seeds of ``iteration``, drawn without replacement from the training tasks.

    Args:
        env: the run's ``env`` section (see ``training_seed_count``).
        seed: ``trainer.seed``; with ``iteration`` it seeds the draw, so a resumed run redraws the same.
        iteration: the training iteration.
        count: tasks per iteration (``rollout.batch_size``); fewer when there are fewer tasks.
    """
    high = training_seed_count(env)
    rng = np.random.default_rng([int(seed), int(iteration)])
    return [int(s) for s in rng.choice(high, size=min(int(count), high), replace=False)]
