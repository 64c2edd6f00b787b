"""A tiny text environment that misbehaves on command, to inject faults into the runner's workers.

Actions: ``ok`` (a normal step), ``hang`` (sleeps for an hour), ``raise`` (raises RuntimeError),
``break`` (raises RuntimeError and leaves the environment broken: every later call raises too).
``expert_action()`` answers ``ok`` at once, or after ``expert_delay_s`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from lamina.envs.base import TextEnv, make_info

ENV_ID = "lamina/FaultyTest-v0"


class FaultyEnv(TextEnv):
    def __init__(self, expert_delay_s: float = 0.0, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.expert_delay_s = expert_delay_s
        self.seed_value, self.steps = 0, 0
        self.broken = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.broken:
            raise RuntimeError("reset on an environment that broke")
        super().reset(seed=seed)
        self.seed_value, self.steps = int(seed or 0), 0
        return self._observe()

    def step(self, action: str):
        if self.broken:
            raise RuntimeError("step on an environment that broke")
        if action == "break":
            self.broken = True
            raise RuntimeError("broke for good")
        if action == "hang":
            time.sleep(3600)
        if action == "raise":
            raise RuntimeError("boom: the engine broke")
        self.steps += 1
        obs, info = self._observe()
        return obs, 1.0, False, False, info

    def expert_action(self) -> str | None:
        time.sleep(self.expert_delay_s)
        return "ok"

    def _observe(self):
        self._last_observation = f"seed {self.seed_value}, step {self.steps}"
        info = make_info(
            task="survive", admissible_actions=["ok"], anchor=(self.seed_value, self.steps), won=False
        )
        return self._last_observation, info
