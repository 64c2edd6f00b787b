"""``lamina train`` with faults at fixed points of the run, for the soak test (``test_soak.py``).

    python tests/trainer/soak_faults.py train env.name=lamina/SoakLake-v0 rollout.env_workers=2 ...

runs ``lamina.cli.main`` after registering ``lamina/SoakLake-v0`` (FrozenLake that misbehaves on
command) and poisoning chosen iterations' advantages. The faults are chosen by environment
variables, so that an uninterrupted reference run and a killed and resumed one meet the same
faults at the same points (spawned environment workers inherit them):

- ``LAMINA_SOAK_RAISE``: task seeds (comma-separated) whose environments raise in their first step
  (each copy is replaced by a fresh one and its episode cut);
- ``LAMINA_SOAK_KILL``: task seeds whose first step SIGKILLs the environment worker process playing
  it (the runner restarts the worker and cuts its episodes);
- ``LAMINA_SOAK_NAN``: iterations whose first advantage is NaN (the mini-batch holding that row has a
  non-finite loss, so its optimizer step is skipped and counted).

Spawned workers import this file as their main module: it imports nothing heavy at the top.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from typing import Any

from lamina.envs.frozenlake import FrozenLakeEnv

ENV_NAME = "SoakLake-v0"
ENV_ID = f"lamina/{ENV_NAME}"


def _numbers(variable: str) -> set[int]:
    return {int(x) for x in os.environ.get(variable, "").split(",") if x.strip()}


class SoakLake(FrozenLakeEnv):
    """FrozenLake whose first step raises, or kills its worker process, for the chosen seeds."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.soak_seed, self.soak_steps = seed, 0
        return super().reset(seed=seed, options=options)

    def step(self, action: str):
        first = self.soak_steps == 0
        self.soak_steps += 1
        # Only inside a worker: in-process environments (rollout.env_workers=0) share the trainer's process.
        if first and self.soak_seed in _numbers("LAMINA_SOAK_KILL") and multiprocessing.parent_process():
            os.kill(os.getpid(), signal.SIGKILL)
        if first and self.soak_seed in _numbers("LAMINA_SOAK_RAISE"):
            raise RuntimeError(f"soak: the environment of seed {self.soak_seed} raises in its first step")
        return super().step(action)


def poison_advantages(iterations: set[int]) -> None:
    """Makes the first advantage NaN in the given iterations (patched into ``lamina.trainer.train``,
    whose loop looks both functions up at call time)."""
    from lamina.trainer import train as train_module

    real_iteration, real_advantages = train_module.run_iteration, train_module.compute_advantages
    current: dict[str, int] = {}

    def run_iteration(cfg, iteration, *args, **kwargs):
        current["iteration"] = iteration
        return real_iteration(cfg, iteration, *args, **kwargs)

    def compute_advantages(cfg, batch):
        advantages = real_advantages(cfg, batch)
        if current.get("iteration") in iterations:
            advantages = advantages.copy()
            advantages[0] = float("nan")
        return advantages

    train_module.run_iteration = run_iteration
    train_module.compute_advantages = compute_advantages


if __name__ == "__main__":
    import lamina.envs
    from lamina.cli import main

    lamina.envs.register(ENV_NAME, "soak_faults:SoakLake")
    poison_advantages(_numbers("LAMINA_SOAK_NAN"))
    sys.exit(main(sys.argv[1:]))
