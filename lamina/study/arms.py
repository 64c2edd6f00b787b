"""A sweep's arms: base (no training), full (all blocks), each chosen block alone, and the extra
arms of ``study.arms``, per seed.

Each arm is an ordinary run folder inside the sweep folder, named ``base-seed0``, ``full-seed0``,
``block07-seed0``; it is finished when its ``eval.json`` exists. The sweep folder's ``sweep.yaml``
records the settings the arms share, so a resumed or extended sweep cannot mix settings.

An extra arm is any layer spec ``lamina train`` accepts (``lamina.trainer.layers``), trained with
the same base, seeds and held-out episodes as the others: ``lora:1@all`` (rank-1 LoRA on every
block), ``lora:8@15``, ``middle:3``, ``top:2@runs/study/demo`` (the two best blocks of an earlier
sweep), ``10-14``, ``[7, 22]``. Its folder and table label are the spec made file-safe:
``lora1@all-seed0``, ``middle3-seed0``, ``top2@demo-seed0``, ``blocks10-14-seed0``, ``blocks7+22-seed0``.

Learning rates: every arm trains at ``trainer.lr`` unless ``study.lr_per_arm`` names it (``full``,
``block`` for every single-block arm, ``block 15`` or ``15`` for one, an extra arm as written in
``study.arms`` or by its label). A LoRA arm without an entry trains at ``trainer.lr`` x
``study.lora_lr_scale`` (default 10): "LoRA Without Regret" (J. Schulman and Thinking Machines Lab,
2025, https://thinkingmachines.ai/blog/lora/) found LoRA's best learning rate about 10x full
fine-tuning's, for supervised and RL training alike, with alpha = 32 and the 1/R scaling making it
nearly independent of the rank.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lamina.errors import ConfigError
from lamina.trainer.checkpoint import checkpoint_folders
from lamina.trainer.config import RunConfig
from lamina.trainer.layers import TOP_SPEC, parse_layers, split_lora

ARM_PATTERN = re.compile(r"^(base|full|block(\d+))-seed(\d+)$")
KINDS = ("base", "full", "block")
# An extra arm's folder: its label (lamina.study.arms.arm_label) and the seed.
EXTRA_PATTERN = re.compile(r"^((?:lora|middle|top|blocks)[A-Za-z0-9@+._-]*?)-seed(\d+)$")
EXTRA_FOLDERS = ("lora*-seed*", "middle*-seed*", "top*-seed*", "blocks*-seed*")  # for study.overwrite
EXTRA_FORMS = (
    "a layer spec lamina train accepts, e.g. 'lora:1@all', 'lora:8@15', 'middle:3', "
    "'top:2@<sweep dir>', '10-14', '[7, 22]' (not 'all' or 'none': the full and base arms always run)"
)
# Keys an arm may change without changing what is measured: where it runs, how it batches, and
# the keys the sweep sets per arm.
PER_ARM_KEYS = (
    "layers",
    "trainer.lr",
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
    """One run of the sweep: ``kind`` base, full or block (then ``block`` is its index), or an extra
    arm's label (``lora1@all``, then ``spec`` is its layer spec), and a seed.

    ``spec`` and ``lr`` (None: ``trainer.lr``) are set by ``plan_arms``; an arm read back from a
    folder name has neither, and arms compare by kind, seed and block only.
    """

    kind: str
    seed: int
    block: int | None = None
    spec: Any = field(default=None, compare=False)
    lr: float | None = field(default=None, compare=False)

    def name(self, num_blocks: int) -> str:
        """The run folder's name; block indices are zero-padded to the model's depth."""
        if self.kind == "block":
            width = max(2, len(str(num_blocks - 1)))
            return f"block{self.block:0{width}d}-seed{self.seed}"
        return f"{self.kind}-seed{self.seed}"

    @property
    def label(self) -> str:
        return f"block {self.block}" if self.kind == "block" else self.kind

    @property
    def layers(self) -> Any:
        """The arm's ``layers`` value."""
        if self.kind in ("base", "full"):
            return {"base": "none", "full": "all"}[self.kind]
        return [self.block] if self.kind == "block" else self.spec


def parse_arm_name(name: str) -> Arm | None:
    """The arm of a run folder's name, or None for other folders."""
    m = ARM_PATTERN.match(name)
    if m is None:
        extra = EXTRA_PATTERN.match(name)
        return Arm(extra.group(1), int(extra.group(2))) if extra else None
    if m.group(2) is not None:
        return Arm("block", int(m.group(3)), int(m.group(2)))
    return Arm(m.group(1), int(m.group(3)))


def _block_label(blocks: list[int]) -> str:
    if len(blocks) > 1 and blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}"
    return "+".join(str(b) for b in blocks)


def _arms_error(err: ValueError) -> ConfigError:
    """A layer-spec error of a ``study.arms`` entry, named as that setting."""
    return ConfigError(f"study.arms: {err}".replace("layers=", "", 1))


def arm_label(spec: Any, num_blocks: int) -> str:
    """The file-safe label (folder stem, table row) of an extra arm's layer spec.

    Raises:
        ConfigError: the spec is not one ``lamina train`` accepts, or it is the base or full arm.
    """
    try:
        rank, inner = split_lora(spec)
        text = str(inner).strip() if isinstance(inner, str) else None
        top = TOP_SPEC.fullmatch(text) if text is not None else None
        # a top:K arm's blocks are resolved in pin_top_arms, from arms.json when the sweep pinned
        # them: a resumed sweep restored without its source table (results/tw-hard) still plans
        blocks = [] if top and int(top.group(1)) > 0 else parse_layers(spec, num_blocks)
    except ValueError as err:
        raise _arms_error(err) from None
    if rank is None and not top and (text in ("all", "none") or not blocks):
        raise ConfigError(
            f"study.arms entry {spec!r} is the {'full' if blocks else 'base'} arm; valid: {EXTRA_FORMS}"
        )
    if text is not None and (m := re.fullmatch(r"middle:(\d+)", text)):
        body = f"middle{m.group(1)}"
    elif top:
        source = re.sub(r"[^A-Za-z0-9._-]", "_", Path(top.group(2).rstrip("/")).name) or "sweep"
        body = f"top{top.group(1)}@{source}"
    elif text == "all":
        body = "all"
    else:
        body = f"blocks{_block_label(blocks)}"
    if rank is None:
        return body
    return f"lora{rank}@{body.removeprefix('blocks')}"


def extra_arms(study: Any, num_blocks: int, lr: float) -> list[tuple[str, Any, float]]:
    """``(label, layer spec, learning rate)`` of each ``study.arms`` entry, in order.

    Raises:
        ConfigError: a bad spec, two entries with one label, or a ``study.lr_per_arm`` key that
            names no arm; one line naming the value and what is valid.
    """
    arms: list[tuple[str, Any, float]] = []
    labels: dict[str, Any] = {}
    for spec in list(study.arms or []):
        spec = spec if isinstance(spec, (str, int)) else list(spec)
        label = arm_label(spec, num_blocks)
        if label in labels:
            raise ConfigError(
                f"study.arms lists {labels[label]!r} and {spec!r}: both are arm {label!r}; keep one"
            )
        labels[label] = spec
        arms.append((label, spec, arm_lr(study, label, spec, lr)))
    _check_per_arm_keys("lr_per_arm", dict(study.lr_per_arm or {}), labels, ("full", "block"))
    memory = dict(study.memory_per_arm or {})
    _check_per_arm_keys("memory_per_arm", memory, labels, ("base", "full", "block", "default"))
    return arms


def _check_per_arm_keys(key: str, table: dict, labels: dict[str, Any], kinds: tuple[str, ...]) -> None:
    """Every key of ``study.<key>`` names an arm and maps it to a positive number."""
    valid_keys = {*kinds, *labels, *(str(s) for s in labels.values())}
    for name, value in table.items():
        if str(name) not in valid_keys and not re.fullmatch(r"(block )?\d+", str(name)):
            raise ConfigError(
                f"study.{key} has key {str(name)!r}, which names no arm; valid: {', '.join(kinds)} "
                f"(block: every single-block arm), 'block N' or N, or a study.arms entry "
                f"({', '.join(labels) or 'none'})"
            )
        if not float(value) > 0:
            raise ConfigError(f"study.{key}[{str(name)!r}]={value} must be > 0")


def per_arm_value(table: Any, label: str, spec: Any) -> float | None:
    """An arm's entry in a per-arm mapping (``study.lr_per_arm``, ``study.memory_per_arm``): by
    ``block 15``, ``15`` or ``block`` for a single block, else by its spec as written or its label."""
    values = {str(k): float(v) for k, v in dict(table or {}).items()}
    if label.startswith("block "):
        keys = [label, label.removeprefix("block "), "block"]
    else:
        keys = [str(spec), label]
    return next((values[k] for k in keys if k in values), None)


def arm_memory_gib(study: Any, arm: Arm) -> float:
    """The memory (GiB) Ray reserves for the arm: its ``study.memory_per_arm`` entry, else the
    ``default`` entry; 0: none."""
    table = dict(study.memory_per_arm or {})
    spec = arm.label if arm.kind in KINDS else arm.spec
    value = per_arm_value(table, arm.label, spec)
    return value if value is not None else float(table.get("default", 0.0))


def arm_lr(study: Any, label: str, spec: Any, lr: float) -> float:
    """An arm's learning rate: its ``study.lr_per_arm`` entry, else ``lr`` (x ``study.lora_lr_scale``
    for a LoRA arm; see the module docstring)."""
    value = per_arm_value(study.lr_per_arm, label, spec)
    if value is not None:
        return value
    return lr * study.lora_lr_scale if split_lora(spec)[0] is not None else lr


def plan_arms(
    blocks: Iterable[int],
    seeds: Iterable[int],
    extra: Iterable[tuple[str, Any, float]] = (),
    lrs: dict[str, float] | None = None,
) -> list[Arm]:
    """All arms in the order they run: base and full first (C needs both), then every block of
    the first seed before the next seed, so a partial sweep already shows a whole depth profile,
    then the extra arms (``extra_arms``) seed by seed.

    Args:
        lrs: learning rates of full and single-block arms by label (``full``, ``block 15``); absent
            ones train at ``trainer.lr``.
    """
    seeds, extra, lrs = list(seeds), list(extra), lrs or {}
    arms = [Arm("base", s) for s in seeds] + [Arm("full", s, lr=lrs.get("full")) for s in seeds]
    arms += [Arm("block", s, b, lr=lrs.get(f"block {b}")) for s in seeds for b in sorted(blocks)]
    return arms + [Arm(label, s, spec=spec, lr=lr) for s in seeds for label, spec, lr in extra]


def study_arms(study: Any, blocks: Iterable[int], num_blocks: int, lr: float) -> list[Arm]:
    """``plan_arms`` of a study config: its blocks, seeds, extra arms and per-arm learning rates."""
    extra = extra_arms(study, num_blocks, lr)
    labels = ["full", *(f"block {b}" for b in blocks)]
    lrs = {label: arm_lr(study, label, label, lr) for label in labels}
    return plan_arms(blocks, study.seeds, extra, lrs)


def pin_top_arms(arms: list[Arm], sweep_dir: Path, num_blocks: int) -> list[Arm]:
    """The arms with every ``top:K@<sweep>`` spec (LoRA on one included) replaced by its blocks,
    resolved once: the blocks ``arms.json`` recorded for that arm when the sweep first planned it,
    else the source sweep's ``contribution.csv`` now.

    The source may still be growing (``top:2@`` the sweep's own folder, for "the top 2 blocks of
    the first seed"); re-reading it on each resume would train other blocks for later seeds, or
    other blocks than a half-finished arm's checkpoint holds.
    """
    plan = Path(sweep_dir) / "arms.json"
    pinned: dict[str, list[int]] = {}
    if plan.exists():
        for row in json.loads(plan.read_text()):
            if row.get("blocks") is not None:
                pinned.setdefault(row["label"], row["blocks"])
    out = []
    for arm in arms:
        rank, inner = split_lora(arm.spec) if arm.spec is not None else (None, None)
        if isinstance(inner, str) and TOP_SPEC.fullmatch(inner.strip()):
            if arm.label not in pinned:
                try:
                    pinned[arm.label] = parse_layers(inner, num_blocks)
                except ValueError as err:
                    raise _arms_error(err) from None
            blocks = pinned[arm.label]
            arm = dataclasses.replace(arm, spec=list(blocks) if rank is None else f"lora:{rank}@{blocks}")
        out.append(arm)
    return out


def arm_config(shared: RunConfig, arm: Arm, sweep_dir: Path, num_blocks: int) -> RunConfig:
    """The arm's run config: the shared settings with its layers, learning rate, seed, folder, and
    resume on.

    The base arm trains nothing (``trainer.iterations=0``) and is only evaluated.
    """
    cfg = copy.deepcopy(shared)
    cfg.layers = arm.layers
    if arm.lr is not None:
        cfg.trainer.lr = arm.lr
    cfg.trainer.seed = arm.seed
    cfg.trainer.output_dir = str(Path(sweep_dir) / arm.name(num_blocks))
    cfg.trainer.resume = True  # a half-finished arm continues from its newest checkpoint
    if arm.kind == "base":
        cfg.trainer.iterations = 0
    return cfg


def write_arm_plan(sweep_dir: Path, shared: RunConfig, arms: list[Arm], num_blocks: int) -> list[dict]:
    """``arms.json``: every planned arm's folder, label, layers, blocks, learning rate and
    trainable-parameter count (counted on a weightless copy of the model, ``lamina.trainer.sizes``);
    returns its rows.

    Rows of arms an earlier run of the sweep planned and this one does not (a run of a subset:
    ``study.seeds=[1]``) are kept after this plan's, so their pinned ``top:K`` blocks survive it.
    """
    from lamina.trainer.sizes import model_skeleton, trainable_parameter_count

    skeleton = model_skeleton(shared.model)
    counts: dict[str, int] = {}
    rows = []
    for arm in arms:
        cfg = arm_config(shared, arm, sweep_dir, num_blocks)
        key = str(arm.layers)
        if key not in counts:
            counts[key] = trainable_parameter_count(cfg, skeleton)
        rows.append(
            {
                "arm": arm.name(num_blocks),
                "label": arm.label,
                "seed": arm.seed,
                "layers": arm.layers,
                "blocks": parse_layers(arm.layers, num_blocks),
                "lr": cfg.trainer.lr,
                "trainable_parameters": counts[key],
            }
        )
    plan = Path(sweep_dir) / "arms.json"
    if plan.exists():
        planned = {row["arm"] for row in rows}
        rows += [row for row in json.loads(plan.read_text()) if row["arm"] not in planned]
    plan.write_text(json.dumps(rows, indent=1))
    return rows


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
