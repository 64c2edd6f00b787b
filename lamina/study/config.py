"""The ``study`` part of ``configs/sweep.yaml`` and the composed sweep config.

cfg = compose_sweep_config(["model=tiny-random", "study.layers=[0,1,2]"])
cfg.study.layers, cfg.run_config()  # the study settings; the settings every arm shares
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lamina.compose import compose
from lamina.errors import ConfigError
from lamina.trainer.config import RunConfig

METRICS = ("success", "return")
EXECUTORS = ("serial", "ray")
KEEP_CHECKPOINTS = ("last", "all")


@dataclass
class StudyConfig:
    """``study`` block of ``configs/sweep.yaml``.

    Args:
        layers: the blocks trained alone, one arm each (a layer spec: ``all``, ``[0, 7]``, ``10-14``).
        seeds: ``trainer.seed`` of each repetition; every arm, base included, runs once per seed.
        metric: ``success`` (held-out success rate) or ``return`` (mean held-out episode return).
        output_dir: the sweep folder; one run folder per arm inside it. Running again with the same
            settings resumes or extends the sweep there; other settings are refused.
        overwrite: delete the sweep ``output_dir`` holds (arm folders, ``sweep.yaml``, tables,
            plots) before this one starts, whatever its settings were.
        executor: ``serial`` (arms one after another in this process) or ``ray`` (parallel arms).
        ray_address: None for a local Ray; else a running cluster's address (``auto``, ``ray://...``).
        gpus_per_arm: GPUs Ray reserves per arm; None: 1 when the cluster has GPUs, else 0.
        cpus_per_arm: CPUs Ray reserves per arm.
        memory_per_arm: GiB Ray reserves per arm (its ``memory`` resource), by ``base``, ``full``,
            ``block``, ``block 15`` or ``15``, or a ``study.arms`` entry; ``default`` for the
            others (else none). Arms whose peaks would not fit together then run one after the
            other. Take the values from a finished arm's ``peak_memory_mb`` in ``metrics.jsonl``.
        bootstrap: replicates of the bootstrap over held-out episodes and seeds.
        confidence: level of the bootstrap intervals (0.95: the 2.5% and 97.5% percentiles).
        bootstrap_seed: seeds the bootstrap's generator (the same tables every time).
        keep_checkpoints: ``last`` removes a finished arm's older checkpoints; ``all`` keeps them.
        arms: extra arms beyond base, full and single blocks, each any layer spec ``lamina train``
            accepts: ``lora:1@all``, ``lora:8@15``, ``middle:3``, ``top:2@<sweep dir>``, ``10-14``,
            ``[7, 22]`` (``lamina.study.arms``); same base, seeds and held-out episodes.
        lr_per_arm: learning rates by arm: ``full``, ``block`` (every single-block arm), ``block 15``
            or ``15``, a ``study.arms`` entry as written or by its label; other arms: ``trainer.lr``.
        lora_lr_scale: a LoRA arm without a ``lr_per_arm`` entry trains at ``trainer.lr`` x this
            (10: "LoRA Without Regret", Schulman et al. 2025: LoRA's best lr is about 10x full
            fine-tuning's).
        forgetting_episodes: held-out episodes per finished arm for its KL to the base model on the
            trained task and its success on ``forgetting_env`` (``lamina.study.forgetting``); 0: off.
        forgetting_env: an ``env`` option no arm trains on (``frozenlake``), evaluated on every arm
            as a measure of forgetting; None: the KL only.
        forgetting_env_overrides: overrides for that environment, e.g. ``["env.max_steps=10"]``.
        power: 1 - beta of the sweep's planning numbers: how many seeds or episodes would resolve
            a difference between two arms (``lamina.study.power``, ``differences.csv``).
        power_pair: the two arms whose difference ``contribution.md`` plans for, e.g. ``[15, full]``
            or ``["block 15", "block 7"]``; None: the best block against full.
    """

    layers: Any = "all"
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "success"
    output_dir: str = "runs/sweep"
    overwrite: bool = False
    executor: str = "serial"
    ray_address: str | None = None
    gpus_per_arm: float | None = None
    cpus_per_arm: float = 1.0
    memory_per_arm: dict[Any, float] = field(default_factory=dict)
    bootstrap: int = 2000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    keep_checkpoints: str = "last"
    arms: list[Any] = field(default_factory=list)
    lr_per_arm: dict[Any, float] = field(default_factory=dict)
    lora_lr_scale: float = 10.0
    forgetting_episodes: int = 0
    forgetting_env: str | None = None
    forgetting_env_overrides: list[str] = field(default_factory=list)
    power: float = 0.8
    power_pair: list[Any] | None = None


@dataclass
class SweepConfig(RunConfig):
    """Everything ``lamina sweep`` reads: the settings every arm shares plus ``study``."""

    study: StudyConfig = field(default_factory=StudyConfig)

    def run_config(self) -> RunConfig:
        """A deep copy of the shared arm settings as a plain ``RunConfig``."""
        return RunConfig(
            **{f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(RunConfig)}
        )


def validate_study(study: StudyConfig) -> None:
    """Checks the study block; raises ``ConfigError`` naming the bad value and the valid ones."""
    if study.metric not in METRICS:
        raise ConfigError(f"study.metric={study.metric!r}; valid: {', '.join(METRICS)}")
    if study.executor not in EXECUTORS:
        raise ConfigError(f"study.executor={study.executor!r}; valid: {', '.join(EXECUTORS)}")
    if study.keep_checkpoints not in KEEP_CHECKPOINTS:
        raise ConfigError(
            f"study.keep_checkpoints={study.keep_checkpoints!r}; valid: {', '.join(KEEP_CHECKPOINTS)}"
        )
    seeds = list(study.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"study.seeds={seeds}: give distinct non-negative integers, e.g. [0, 1, 2]")
    if study.bootstrap < 100:
        raise ConfigError(f"study.bootstrap={study.bootstrap} must be >= 100 (replicates per interval)")
    if not 0.5 <= study.confidence < 1:
        raise ConfigError(f"study.confidence={study.confidence} must be in [0.5, 1)")
    if study.gpus_per_arm is not None and study.gpus_per_arm < 0:
        raise ConfigError(f"study.gpus_per_arm={study.gpus_per_arm} must be >= 0 (or null: automatic)")
    if study.cpus_per_arm <= 0:
        raise ConfigError(f"study.cpus_per_arm={study.cpus_per_arm} must be > 0")
    if not study.lora_lr_scale > 0:
        raise ConfigError(f"study.lora_lr_scale={study.lora_lr_scale} must be > 0 (10: 10x trainer.lr)")
    if study.forgetting_episodes < 0:
        raise ConfigError(f"study.forgetting_episodes={study.forgetting_episodes} must be >= 0 (0: off)")
    if study.forgetting_env and study.forgetting_episodes < 1:
        raise ConfigError(
            f"study.forgetting_env={study.forgetting_env!r} needs study.forgetting_episodes >= 1 "
            f"(got {study.forgetting_episodes})"
        )
    if not 0 < study.power < 1:
        raise ConfigError(f"study.power={study.power} must be in (0, 1), e.g. 0.8")
    if study.power_pair is not None and len(study.power_pair) != 2:
        raise ConfigError(f"study.power_pair={list(study.power_pair)}: give two arms, e.g. [15, full]")


def compose_sweep_config(overrides: Sequence[str]) -> SweepConfig:
    """``configs/sweep.yaml`` with Hydra overrides (``study=<preset>`` picks ``configs/study/``).

    Raises:
        ConfigError: an unknown group option, a bad override or a bad study value, in one line.
    """
    cfg = compose("sweep", overrides, SweepConfig)
    validate_study(cfg.study)
    return cfg
