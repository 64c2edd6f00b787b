"""The text-environment contract every lamina environment follows.

An environment is a ``gymnasium.Env[str, str]``. ``reset(seed=s)`` is deterministic (same seed,
same task and start state) and ``info`` after reset and after every step carries:

- ``task``: the goal in words;
- ``admissible_actions``: list of strings, or ``None`` where the action space is open;
- ``anchor``: a hashable key of the true environment state (GiGPO clusters rows by it);
- ``won``: bool;
- ``action_valid``: bool, after a step (True after reset);
- optionally ``open_commands``: the commands (``search``) that take any argument at this step,
  besides the admissible list (whose entries for them are then suggestions).

An action the environment cannot parse or execute never raises: the state stays unchanged,
``action_valid`` is False and the observation says why.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium import spaces

MAX_TEXT_LENGTH = 1_000_000


class TextSpace(spaces.Text):
    """A ``gymnasium.spaces.Text`` that holds any Python string up to ``max_length``.

    Gymnasium's ``Text`` only admits a fixed charset (alphanumerics by default), which real
    observations (punctuation, unicode product names) break. Sampling still draws from printable
    ASCII so ``check_env`` and random agents work.
    """

    def __init__(self, max_length: int = MAX_TEXT_LENGTH, seed: int | None = None):
        printable = "".join(chr(c) for c in range(32, 127))
        super().__init__(max_length=max_length, min_length=0, charset=printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"


def make_info(
    *,
    task: str,
    admissible_actions: Sequence[str] | None,
    anchor: Hashable,
    won: bool,
    action_valid: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Builds the ``info`` dict of the contract; ``extra`` keys are environment specific."""
    return {
        "task": task,
        "admissible_actions": list(admissible_actions) if admissible_actions is not None else None,
        "anchor": anchor,
        "won": bool(won),
        "action_valid": bool(action_valid),
        **extra,
    }


class TextEnv(gym.Env[str, str]):
    """Base class for lamina's text environments: the two text spaces and an optional expert.

    Subclasses implement ``reset`` and ``step`` of ``gymnasium.Env`` and return ``make_info(...)``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, render_mode: str | None = None):
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r} is not supported; valid: None, 'ansi'")
        self.render_mode = render_mode
        self.observation_space = TextSpace()
        self.action_space = TextSpace()
        self._last_observation = ""
        # The episode's step limit when made by ``lamina.envs.make`` (its ``TimeLimit``), else None.
        self.step_limit: int | None = None

    def expert_action(self) -> str | None:
        """The next action of a reference solver (walkthrough, planner), or None if there is none."""
        return None

    def render(self) -> str | None:
        return self._last_observation if self.render_mode == "ansi" else None
