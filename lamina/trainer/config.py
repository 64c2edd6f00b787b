"""Dataclasses that mirror the Hydra config tree (``configs/``); each component gets its own part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.agents.models import ModelConfig
from lamina.agents.prompt import PromptConfig
from lamina.algorithms.losses import LossConfig
from lamina.integrations.verl.config import VerlBackendConfig
from lamina.trainer.logs import LoggingConfig
from lamina.trainer.rollout import RolloutConfig
from lamina.trainer.schedule import ScheduleConfig
from lamina.trainer.update import UpdateConfig


@dataclass
class EnvConfig:
    """``env`` config group.

    Args:
        name: short name (``textworld``) or Gymnasium id (``lamina/TextWorld-v0``).
        max_steps: steps per episode before truncation.
        kwargs: passed to the environment's constructor.
        train_tasks: training tasks are the seeds 0..train_tasks-1 (None: any seed below 2**31).
        eval_seed_offset: evaluation tasks use seeds from here on, apart from training seeds.
        eval_kwargs: merged over ``kwargs`` for the evaluation environments (e.g. another split).
            Empty: the held-out tasks are the seeds from ``eval_seed_offset`` on, and training
            seeds stay below it.
        required_kwargs: constructor arguments that must be set (in ``kwargs`` and, merged, for
            evaluation), checked before any work starts.
    """

    name: str = "textworld"
    max_steps: int = 8
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_tasks: int | None = None
    eval_seed_offset: int = 100_000
    eval_kwargs: dict[str, Any] = field(default_factory=dict)
    required_kwargs: list[str] = field(default_factory=list)


@dataclass
class AlgorithmConfig:
    """``algorithm`` config group: the advantage estimator and its loss.

    Args:
        estimator: a registered estimator (``grpo``, ``gigpo``, ``rloo``, ``reinforce_pp``).
        needs_groups: the estimator compares trajectories within a group (group_size >= 2).
        norm: ``std`` or ``none`` (Dr. GRPO / "w/o std").
        gamma, step_weight, episode_stats, anchor_similarity: GiGPO's options.
        loss: the policy loss settings.
    """

    estimator: str = "grpo"
    needs_groups: bool = True
    norm: str = "std"
    gamma: float = 0.95
    step_weight: float = 1.0
    episode_stats: str = "trajectory"
    anchor_similarity: float | None = None
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class TrainerConfig:
    """``trainer`` config group.

    Args:
        iterations: rollout -> update cycles.
        seed: seeds torch, task sampling and environments.
        output_dir: where config, metrics, checkpoints and eval results go.
        save_every: iterations between checkpoints (the last iteration is always saved).
        keep_checkpoints: keep only the N newest good checkpoints (0: keep all).
        resume: continue from the newest good checkpoint in ``output_dir``.
        lr, weight_decay: AdamW settings; ``lr_multipliers`` scales the lr of given blocks.
        train_embeddings, train_lm_head: also train these (frozen by default).
        schedule: the learning-rate schedule (linear warm-up, then constant or cosine).
        progress: show a live progress bar (on a terminal; elsewhere one line per iteration).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        max_skipped_steps: stop after this many optimizer steps in a row were skipped for a
            non-finite loss or gradient.
    """

    iterations: int = 4
    seed: int = 0
    output_dir: str = "runs/default"
    save_every: int = 0
    keep_checkpoints: int = 0
    resume: bool = False
    lr: float = 1e-5
    weight_decay: float = 0.0
    lr_multipliers: dict[int, float] = field(default_factory=dict)
    train_embeddings: bool = False
    train_lm_head: bool = False
    update: UpdateConfig = field(default_factory=UpdateConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    progress: bool = True
    device: str = "auto"
    max_skipped_steps: int = 3


@dataclass
class EvalConfig:
    """``eval`` config group: held-out episodes (seeds from ``env.eval_seed_offset``, or the
    environment's held-out split through ``env.eval_kwargs``).

    Args:
        episodes: held-out episodes after training (0 skips evaluation).
        temperature: sampling temperature (0: greedy).
        base: also evaluate the untrained model before iteration 0 (``eval_base.json``).
        every: evaluate every N iterations during training (rows with ``kind: "eval"`` in
            ``metrics.jsonl``); 0: only at the end.
    """

    episodes: int = 8
    temperature: float = 0.4
    base: bool = True
    every: int = 0


@dataclass
class RunConfig:
    """Everything ``lamina train`` reads. ``layers`` is a layer spec (see ``trainer.layers``)."""

    env: EnvConfig = field(default_factory=EnvConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    agent: PromptConfig = field(default_factory=PromptConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    layers: Any = "middle:1"
    modules: str = "all"
    backend: str = "native"  # native (this process) or verl (Ray + FSDP + vLLM, ``cfg.verl``)
    verl: VerlBackendConfig = field(default_factory=VerlBackendConfig)
    init_from: str | None = None  # a run or checkpoint folder (e.g. from ``lamina sft``) to start from
