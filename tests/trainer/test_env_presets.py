"""Every environment preset in configs/env composes into a valid run config, and the harder
TextWorld preset plays level-3 games."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.cli import compose_config
from lamina.compose import config_dir
from lamina.envs.registry import make
from lamina.trainer.validation import validate

PRESETS = sorted(p.stem for p in (Path(config_dir()) / "env").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_env_preset_composes_and_validates(preset, tmp_path):
    overrides = [f"env={preset}", f"trainer.output_dir={tmp_path}", "model=tiny-random"]
    required = compose_config(overrides).env.required_kwargs  # files only the user has (qa)
    for key in required:
        overrides += [f"env.kwargs.{key}={tmp_path / 'train'}", f"env.eval_kwargs.{key}={tmp_path / 'test'}"]
    cfg = compose_config(overrides)
    assert validate(cfg)
    assert cfg.env.max_steps >= 1


def test_textworld_hard_is_level_3_with_8_steps(tmp_path):
    cfg = compose_config(["env=textworld_hard", f"trainer.output_dir={tmp_path}"])
    assert cfg.env.max_steps == 8 and cfg.env.kwargs["settings"]["level"] == 3
    env = make("textworld", max_episode_steps=cfg.env.max_steps, **cfg.env.kwargs)
    _, info = env.reset(seed=0)
    assert info["admissible_actions"] and info["task"]
    env.close()


def test_the_documented_textworld_hard_recipe_is_a_valid_run(tmp_path):
    # The command in configs/env/textworld_hard.yaml and the README, measured there to learn.
    recipe = "env=textworld_hard algorithm=gigpo rollout.batch_size=4 trainer.iterations=6".split()
    assert " ".join(recipe) in (Path(config_dir()) / "env" / "textworld_hard.yaml").read_text()
    cfg = compose_config([*recipe, f"trainer.output_dir={tmp_path}"])
    assert validate(cfg)
    assert cfg.algorithm.estimator == "gigpo" and cfg.rollout.batch_size * cfg.rollout.group_size == 16
