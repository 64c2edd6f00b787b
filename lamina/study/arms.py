"""A sweep's arms: base (no training), full (all blocks) and each chosen block alone, per seed.

Each arm is an ordinary run folder inside the sweep folder, named ``base-seed0``, ``full-seed0``,
``block07-seed0``; it is finished when its ``eval.json`` exists. The sweep folder's ``sweep.yaml``
records the settings the arms share, so a resumed or extended sweep cannot mix settings.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lamina.errors import ConfigError
from lamina.trainer.checkpoint import checkpoint_folders
from lamina.trainer.config import RunConfig

ARM_PATTERN = re.compile(r"^(base|full|block(\d+))-seed(\d+)$")
KINDS = ("base", "full", "block")
# Keys an arm may change without changing what is measured: where it runs, how it batches, and
# the keys the sweep sets per arm.
PER_ARM_KEYS = (
    "layers",
    "trainer.output_dir",
    "trainer.seed",
    "trainer.resume",
    "trainer.progress",
    "trainer.device",
    "rollout.env_workers",
    "rollout.micro_batch_size",
    "trainer.update.micro_batch_size",
)


@dataclass(frozen=True)
class Arm:
    """One run of the sweep: ``kind`` base, full or block (then ``block`` is its index), and a seed."""

    kind: str
    seed: int
    block: int | None = None

    def name(self, num_blocks: int) -> str:
        """The run folder's name; block indices are zero-padded to the model's depth."""
        if self.kind == "block":
            width = max(2, len(str(num_blocks - 1)))
            return f"block{self.block:0{width}d}-seed{self.seed}"
        return f"{self.kind}-seed{self.seed}"

    @property
    def label(self) -> str:
        return f"block {self.block}" if self.kind == "block" else self.kind


def parse_arm_name(name: str) -> Arm | None:
    """The arm of a run folder's name, or None for other folders."""
    m = ARM_PATTERN.match(name)
    if m is None:
        return None
    if m.group(2) is not None:
        return Arm("block", int(m.group(3)), int(m.group(2)))
    return Arm(m.group(1), int(m.group(3)))


def plan_arms(blocks: Iterable[int], seeds: Iterable[int]) -> list[Arm]:
    """All arms in the order they run: base and full first (C needs both), then every block of
    the first seed before the next seed, so a partial sweep already shows a whole depth profile."""
    seeds = list(seeds)
    arms = [Arm("base", s) for s in seeds] + [Arm("full", s) for s in seeds]
    return arms + [Arm("block", s, b) for s in seeds for b in sorted(blocks)]


def arm_config(shared: RunConfig, arm: Arm, sweep_dir: Path, num_blocks: int) -> RunConfig:
    """The arm's run config: the shared settings with its layers, seed, folder, and resume on.

    The base arm trains nothing (``trainer.iterations=0``) and is only evaluated.
    """
    cfg = copy.deepcopy(shared)
    cfg.layers = {"base": "none", "full": "all"}.get(arm.kind, [arm.block])
    cfg.trainer.seed = arm.seed
    cfg.trainer.output_dir = str(Path(sweep_dir) / arm.name(num_blocks))
    cfg.trainer.resume = True  # a half-finished arm continues from its newest checkpoint
    if arm.kind == "base":
        cfg.trainer.iterations = 0
    return cfg


def is_finished(run_dir: Path) -> bool:
    """An arm is finished once its evaluation is written."""
    return (Path(run_dir) / "eval.json").exists()


def prune_checkpoints(run_dir: Path) -> int:
    """Removes all but the newest checkpoint of a finished run; returns how many it removed."""
    folders = checkpoint_folders(Path(run_dir))
    for folder in folders[:-1]:
        shutil.rmtree(folder)
    return max(0, len(folders) - 1)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def shared_settings(cfg: RunConfig) -> dict[str, Any]:
    """The settings every arm must share, as flat ``dotted.key -> value``."""
    flat = _flatten(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    return {k: v for k, v in flat.items() if k not in PER_ARM_KEYS and not k.startswith("study.")}


def check_same_settings(sweep_dir: Path, cfg: RunConfig) -> None:
    """Refuses to resume or extend a sweep whose recorded ``sweep.yaml`` has other shared settings
    (keys only one side knows, e.g. from another lamina version, are not compared).

    Raises:
        ConfigError: naming the first differing key, both values and the way out.
    """
    recorded_path = Path(sweep_dir) / "sweep.yaml"
    if not recorded_path.exists():
        return
    recorded = _flatten(OmegaConf.to_container(OmegaConf.load(recorded_path), resolve=True))
    recorded = {k: v for k, v in recorded.items() if k not in PER_ARM_KEYS and not k.startswith("study.")}
    current = shared_settings(cfg)
    for key in sorted(set(recorded) & set(current)):
        if recorded[key] != current[key]:
            raise ConfigError(
                f"study.output_dir={str(sweep_dir)!r} holds a sweep run with {key}={recorded[key]!r}, "
                f"but this one asks for {key}={current[key]!r}; every arm must share its settings: "
                "use the same settings to resume or extend it, or a new study.output_dir"
            )
