"""Registration of lamina environments as ``lamina/<Name>-v0`` Gymnasium ids.

Built-in environments register lazily (string entry points) when ``lamina.envs`` is imported.
Third-party packages add environments through the entry-point group ``lamina.envs``: the entry
point's name is the id without namespace and its value the environment class, e.g.

    [project.entry-points."lamina.envs"]
    "MyMaze-v0" = "my_pkg.maze:MazeEnv"

registers ``lamina/MyMaze-v0``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

NAMESPACE = "lamina"
ENTRY_POINT_GROUP = "lamina.envs"

# Short names used in configs (`env=textworld`) -> Gymnasium ids.
SHORT_NAMES: dict[str, str] = {}


def register(name: str, entry_point: str, short_name: str | None = None, **kwargs: Any) -> str:
    """Registers ``lamina/<name>`` with Gymnasium (idempotent) and returns the full id."""
    env_id = f"{NAMESPACE}/{name}"
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, **kwargs)
    if short_name is not None:
        SHORT_NAMES[short_name] = env_id
    return env_id


def load_plugins() -> list[str]:
    """Registers environments that other installed packages declare in ``lamina.envs``."""
    ids = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ids.append(register(ep.name, ep.value, short_name=ep.name.split("-v")[0].lower()))
    return ids


def registered_envs() -> list[str]:
    """All ``lamina/...`` ids known to Gymnasium, plugins included, sorted."""
    load_plugins()
    return sorted(env_id for env_id in gym.registry if env_id.startswith(f"{NAMESPACE}/"))


def resolve_env_id(name: str) -> str:
    """Turns ``textworld``, ``TextWorld-v0`` or ``lamina/TextWorld-v0`` into a registered id.

    Raises:
        ValueError: naming the unknown value and every valid one.
    """
    load_plugins()
    candidates = [name, f"{NAMESPACE}/{name}", SHORT_NAMES.get(name.lower(), "")]
    for candidate in candidates:
        if candidate in gym.registry:
            return candidate
    valid = sorted(SHORT_NAMES) + registered_envs()
    raise ValueError(f"unknown environment {name!r}; valid: {', '.join(valid)}")


def make(name: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for a lamina environment by short name or id.

    The step limit the environment ends up with (``max_episode_steps``, else the registration's)
    is told to environments that have a ``step_limit`` attribute (``TextEnv``), so an environment
    whose own generation depends on it (Sokoban's solvable-within-N rooms) follows ``env.max_steps``.
    """
    env = gym.make(resolve_env_id(name), **kwargs)
    if hasattr(env.unwrapped, "step_limit") and env.spec is not None:
        env.unwrapped.step_limit = env.spec.max_episode_steps
    return env
