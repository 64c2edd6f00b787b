"""One seed rule for both backends: training never draws a held-out task, for every env preset."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lamina.commands.train import compose_config
from lamina.compose import group_options
from lamina.envs.seeds import ANY_SEED, task_seeds, training_seed_count


@pytest.mark.parametrize("preset", group_options("env"))
def test_training_seeds_stay_below_the_held_out_ones(preset):
    cfg = compose_config([f"env={preset}", "rollout.batch_size=8"])
    env = cfg.env
    seeds = {s for it in range(300) for s in task_seeds(env, cfg.trainer.seed, it, cfg.rollout.batch_size)}
    if env.train_tasks:
        assert seeds <= set(range(env.train_tasks))
    elif env.eval_kwargs:  # held out as a split of its own (ALFWorld's valid_seen, WebShop's test goals)
        assert training_seed_count(env) == ANY_SEED
    else:  # held out by seed: sokoban, frozenlake, countdown, arithmetic
        assert max(seeds) < env.eval_seed_offset


@pytest.mark.parametrize("preset", ["sokoban", "frozenlake", "countdown", "arithmetic", "textworld"])
def test_the_verl_backend_draws_the_same_seeds(preset):
    from lamina.integrations.verl import trainer as verl_trainer

    assert verl_trainer.task_seeds is task_seeds  # one function, not a copy
    cfg = compose_config([f"env={preset}"])
    # What the verl trainer reads: the env section as lamina_section puts it into verl's config.
    section = OmegaConf.create({"env": OmegaConf.to_container(OmegaConf.structured(cfg.env))}).env
    for iteration in range(5):
        native = task_seeds(cfg.env, cfg.trainer.seed, iteration, 4)
        assert task_seeds(section, cfg.trainer.seed, iteration, 4) == native


def test_a_small_task_pool_gives_every_task_once():
    cfg = compose_config(["env=textworld", "env.train_tasks=3", "rollout.batch_size=8"])
    assert sorted(task_seeds(cfg.env, 0, 0, cfg.rollout.batch_size)) == [0, 1, 2]
