"""Checks of a ``RunConfig`` that need no weights: each refusal names the bad key and what is valid.

blocks = validate(cfg)   # the trainable block indices; raises ConfigError
"""

from __future__ import annotations

from lamina.agents.choose import SCORE_MODES
from lamina.agents.models import model_num_blocks, resolve_device, resolve_dtype
from lamina.algorithms.advantages import get_estimator
from lamina.envs import resolve_env_id
from lamina.errors import ConfigError
from lamina.trainer.config import BACKENDS, RunConfig
from lamina.trainer.layers import parse_layers
from lamina.trainer.schedule import check_schedule


def validate(cfg: RunConfig) -> list[int]:
    """Checks the config cheaply (no weights loaded); returns the trainable block indices."""
    try:
        resolve_env_id(cfg.env.name)
        get_estimator(cfg.algorithm.estimator)
        blocks = parse_layers(cfg.layers, model_num_blocks(cfg.model))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.algorithm.needs_groups and cfg.rollout.group_size < 2:
        raise ConfigError(
            f"rollout.group_size={cfg.rollout.group_size}: algorithm {cfg.algorithm.estimator!r} compares "
            "trajectories within a group and needs rollout.group_size >= 2"
        )
    for key in ("batch_size", "max_new_tokens", "micro_batch_size"):
        if getattr(cfg.rollout, key) < 1:
            raise ConfigError(f"rollout.{key}={getattr(cfg.rollout, key)} must be >= 1")
    if cfg.trainer.iterations < 0:
        raise ConfigError(f"trainer.iterations={cfg.trainer.iterations} must be >= 0 (0: evaluate only)")
    if cfg.env.max_steps < 1:
        raise ConfigError(f"env.max_steps={cfg.env.max_steps} must be >= 1")
    if cfg.agent.mode not in ("generate", "choose"):
        raise ConfigError(f"agent.mode={cfg.agent.mode!r}; valid: generate, choose")
    if cfg.rollout.env_workers < 0:
        raise ConfigError(f"rollout.env_workers={cfg.rollout.env_workers} must be >= 0 (0: in this process)")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend={cfg.backend!r}; valid: {', '.join(BACKENDS)}")
    if cfg.trainer.iterations > 0 and not cfg.rollout.temperature > 0:
        raise ConfigError(
            f"rollout.temperature={cfg.rollout.temperature}: training samples from softmax(logits / T) "
            "and needs T > 0 (evaluation may be greedy: eval.temperature=0)"
        )
    if cfg.agent.choose_score not in SCORE_MODES:
        raise ConfigError(f"agent.choose_score={cfg.agent.choose_score!r}; valid: {', '.join(SCORE_MODES)}")
    try:
        check_schedule(cfg.trainer.schedule)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.eval.episodes < 0 or cfg.eval.every < 0:
        raise ConfigError(
            f"eval.episodes={cfg.eval.episodes}, eval.every={cfg.eval.every}: both must be >= 0 (0: none)"
        )
    validate_env(cfg)
    for key in ("save_every", "keep_checkpoints"):
        if getattr(cfg.trainer, key) < 0:
            raise ConfigError(f"trainer.{key}={getattr(cfg.trainer, key)} must be >= 0 (0: off)")
    if not cfg.trainer.lr > 0:
        raise ConfigError(f"trainer.lr={cfg.trainer.lr} must be > 0 (e.g. 1e-4 for one block, 1e-5 for all)")
    if cfg.trainer.max_skipped_steps < 1:
        raise ConfigError(f"trainer.max_skipped_steps={cfg.trainer.max_skipped_steps} must be >= 1")
    try:
        resolve_dtype(cfg.model.dtype, resolve_device(cfg.trainer.device))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return blocks


def validate_env(cfg: RunConfig) -> None:
    """Required constructor arguments are set, and training seeds stay below the held-out ones."""
    evaluating = cfg.eval.episodes > 0
    merged = {**cfg.env.kwargs, **cfg.env.eval_kwargs}
    for key in cfg.env.required_kwargs:
        if cfg.env.kwargs.get(key) is None:
            raise ConfigError(f"env.kwargs.{key} is not set; env={cfg.env.name} needs it")
        if evaluating and merged.get(key) is None:
            raise ConfigError(
                f"env.eval_kwargs.{key} is not set; env={cfg.env.name} evaluates on held-out tasks of their "
                "own (or set eval.episodes=0)"
            )
    train_tasks, offset = cfg.env.train_tasks, cfg.env.eval_seed_offset
    if not cfg.env.eval_kwargs and train_tasks is not None and train_tasks > offset:
        raise ConfigError(
            f"env.train_tasks={train_tasks} would overlap the held-out seeds from env.eval_seed_offset="
            f"{offset}; valid: env.train_tasks <= {offset}"
        )
