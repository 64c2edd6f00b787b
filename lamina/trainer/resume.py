"""Saving a run's whole state at an iteration and resuming from the newest good one exactly.

The checkpoint format itself (staging, manifest, pruning) is ``lamina.trainer.checkpoint``; this
module decides what a run's state is: weights, optimizer, KL reference, random generators, the
loop counters, and the settings a resume must not change.
"""

from __future__ import annotations

import json
from pathlib import Path

from lamina.errors import ConfigError, TrainingStopped
from lamina.trainer.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_tensors,
    restore_rng,
    save_checkpoint,
)
from lamina.trainer.config import RunConfig
from lamina.trainer.factories import Learner
from lamina.trainer.layers import split_lora
from lamina.trainer.lora import LORA_ALPHA, count_parameters
from lamina.trainer.precision import all_finite


def optimizer_settings(cfg: RunConfig) -> dict:
    """What must not change across a resume: the optimizer's state was built for these."""
    schedule = cfg.trainer.schedule
    return {
        "lr": cfg.trainer.lr,
        "lr_multipliers": {str(k): float(v) for k, v in sorted(cfg.trainer.lr_multipliers.items())},
        "weight_decay": cfg.trainer.weight_decay,
        # A cosine schedule's shape depends on the run length; a constant one does not.
        "schedule": [schedule.kind, schedule.warmup_iterations, schedule.min_lr_ratio]
        + ([cfg.trainer.iterations] if schedule.kind == "cosine" else []),
    }


def save(cfg: RunConfig, learner: Learner, out: Path, iteration: int) -> Path:
    """A checkpoint of everything an exact resume needs; refuses non-finite weights."""
    if not all_finite(learner.trainable):
        raise TrainingStopped(
            f"iteration {iteration + 1}: the trained weights hold NaN or Inf, so no checkpoint was written; "
            f"the last good one is {latest_checkpoint(out) or 'none'}"
        )
    rng_tensors, rng_states = capture_rng(learner.shuffle)
    tensors = {"rng": rng_tensors}
    if learner.reference is not None:
        tensors["reference"] = dict(zip(learner.names, learner.reference.initial, strict=True))
    rank, _ = split_lora(cfg.layers)
    state = {
        "blocks": learner.blocks,
        "trainable_parameters": count_parameters(learner.model, learner.names),
        # What a plain model needs to merge the adapters (lamina.trainer.checkpoint.load_trained_tensors).
        **({"lora": {"rank": rank, "alpha": LORA_ALPHA}} if rank is not None else {}),
        "optimizer_settings": optimizer_settings(cfg),
        "rng": rng_states,
        "skipped_in_a_row": learner.skipped_in_a_row,
    }
    return save_checkpoint(out, iteration, learner.model, learner.names, learner.optimizer, state, tensors)


def resume(cfg: RunConfig, learner: Learner, out: Path) -> int:
    """Restores the newest good checkpoint when ``trainer.resume``; returns the next iteration.

    Weights, optimizer state, KL reference, every random generator and the loop counters come back,
    so a resumed run continues exactly as an uninterrupted one; ``metrics.jsonl`` rows after the
    checkpoint are dropped. A changed layer selection or learning rate is refused.
    """
    ckpt = latest_checkpoint(out) if cfg.trainer.resume else None
    if ckpt is None:
        return 0
    state = json.loads((ckpt / "state.json").read_text())
    if state["trainable"] != learner.names:
        raise ConfigError(
            f"trainer.resume: {ckpt} trained blocks {state.get('blocks')} "
            f"({len(state['trainable'])} tensors) but this run selects blocks {learner.blocks} "
            f"({len(learner.names)} tensors); resume with the same layers/modules or use a new "
            "trainer.output_dir"
        )
    rank, _ = split_lora(cfg.layers)
    saved_rank = (state.get("lora") or {}).get("rank")
    if saved_rank != rank:
        trained = f"LoRA of rank {saved_rank}" if saved_rank else "whole tensors"
        raise ConfigError(
            f"trainer.resume: {ckpt} trained {trained} "
            f"but this run asks for layers={cfg.layers!r}; resume with the same layers or use a new "
            "trainer.output_dir"
        )
    saved = state.get("optimizer_settings")
    if saved is not None and saved != optimizer_settings(cfg):
        raise ConfigError(
            f"trainer.resume: {ckpt} was trained with {saved} but this run asks for "
            f"{optimizer_settings(cfg)}; resume with the same settings or use a new trainer.output_dir"
        )
    load_checkpoint(ckpt, learner.model, learner.optimizer)
    reference = load_tensors(ckpt, "reference")
    if learner.reference is not None and reference is not None:
        device = learner.trainable[0].device
        learner.reference.initial = [reference[n].to(device) for n in learner.names]
    rng = load_tensors(ckpt, "rng")
    if rng is not None and "rng" in state:
        restore_rng(rng, state["rng"], learner.shuffle)
    learner.skipped_in_a_row = int(state.get("skipped_in_a_row", 0))
    truncate_metrics(out / "metrics.jsonl", state["iteration"])
    return state["iteration"] + 1


def truncate_metrics(path: Path, last_iteration: int) -> None:
    """Drops ``metrics.jsonl`` rows of iterations after ``last_iteration`` (atomically)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("iteration", -1) <= last_iteration
    ]
    staging = path.with_suffix(".jsonl.partial")
    staging.write_text("".join(line + "\n" for line in kept))
    staging.replace(path)
