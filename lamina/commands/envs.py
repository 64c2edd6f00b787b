"""``lamina envs``: the registered environments, then the ``env=`` presets of ``configs/env/``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from lamina.compose import config_dir, group_options


def env_presets() -> dict[str, dict]:
    """``env=`` preset -> its config section (``name``, ``max_steps``, ``kwargs``, ...)."""
    from omegaconf import OmegaConf

    # A preset file is a mapping, so its container is a dict.
    return {
        name: cast(
            dict, OmegaConf.to_container(OmegaConf.load(config_dir() / "env" / f"{name}.yaml"), resolve=True)
        )
        for name in group_options("env")
    }


def preset_summary(section: dict) -> str:
    """One line: the environment, its step limit and the constructor arguments that are set."""
    kwargs = {k: v for k, v in (section.get("kwargs") or {}).items() if v is not None}
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{section['name']}, {section['max_steps']} steps" + (f"; {args}" if args else "")


def cmd_envs(overrides: Sequence[str]) -> int:
    import gymnasium as gym

    from lamina.envs import registered_envs
    from lamina.envs.registry import SHORT_NAMES

    env_ids = registered_envs()  # loads plugins, which adds their short names
    short = {v: k for k, v in SHORT_NAMES.items()}
    for env_id in env_ids:
        spec = gym.spec(env_id)
        print(f"{env_id:28s} {short.get(env_id, ''):12s} {spec.entry_point}")
    print("\npresets (lamina train env=PRESET, lamina play env=PRESET):")
    for name, section in env_presets().items():
        print(f"{name:28s} {preset_summary(section)}")
    return 0
