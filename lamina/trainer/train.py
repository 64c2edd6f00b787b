"""The native training loop: rollout -> advantages -> PPO update, on the chosen blocks only.

lamina train env=textworld algorithm=grpo layers=[15] trainer.iterations=10
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import torch
from omegaconf import OmegaConf

from lamina.agents.prefix import PrefixStore
from lamina.agents.vllm_engine import EngineUnavailable, VLLMPolicy
from lamina.algorithms.advantages import anchor_stats, get_estimator
from lamina.envs.runner import EnvGroupRunner
from lamina.envs.seeds import task_seeds
from lamina.errors import ConfigError, StoppedBySignal, TrainingStopped
from lamina.trainer.checkpoint import disk_full, is_disk_full, latest_checkpoint, prune_checkpoints
from lamina.trainer.config import RunConfig
from lamina.trainer.evaluate import run_eval
from lamina.trainer.factories import Learner, build_learner, make_policy, make_runner
from lamina.trainer.logs import MetricsLogger, plot_curves
from lamina.trainer.progress import TrainingProgress
from lamina.trainer.resume import resume, save
from lamina.trainer.rollout import Policy, RolloutBatch, collect_rollouts
from lamina.trainer.run_folder import claim_run_folder
from lamina.trainer.schedule import make_scheduler
from lamina.trainer.signals import GracefulStop
from lamina.trainer.telemetry import BlockTelemetry
from lamina.trainer.update import ppo_update
from lamina.trainer.validation import validate


def compute_advantages(cfg: RunConfig, batch: RolloutBatch) -> np.ndarray:
    """The configured estimator over the batch's step rows, shape (N,)."""
    algo = cfg.algorithm
    return get_estimator(algo.estimator)(
        batch.rewards,
        batch.traj_ids,
        batch.step_ids,
        batch.group_ids,
        batch.anchors,
        norm=algo.norm,
        gamma=algo.gamma,
        step_weight=algo.step_weight,
        episode_stats=algo.episode_stats,
        anchor_similarity=algo.anchor_similarity,
    )


@contextlib.contextmanager
def capturing_prefix(policy: Policy, store: PrefixStore | None):
    """While a training rollout scores actions, keep the frozen-prefix states it computes anyway
    (choose mode); the update then starts at the lowest trainable block."""
    if store is None or not hasattr(policy, "prefix_store"):
        yield
        return
    policy.prefix_store = store
    try:
        yield
    finally:
        policy.prefix_store = None


def update_learner(
    cfg: RunConfig,
    learner: Learner,
    policy: Policy,
    batch,
    advantages,
    on_micro_batch=None,
    on_gradients=None,
):
    """The PPO update of one rollout batch with the run's settings; its metrics."""
    return ppo_update(
        policy,
        learner.optimizer,
        learner.trainable,
        batch,
        advantages,
        cfg.algorithm.loss,
        cfg.trainer.update,
        cfg.algorithm.loss.loss_scale_factor or policy.max_response_units,
        cfg.rollout.temperature,
        learner.reference,
        learner.shuffle,
        on_micro_batch=on_micro_batch,
        prefix=learner.prefix,
        on_gradients=on_gradients,
        engine_log_probs=getattr(policy, "engine_log_probs", False),
        tis_cap=cfg.rollout.tis_cap,
    )


def sync_engine(policy: Policy, names: Sequence[str]) -> dict[str, float]:
    """Pushes the named (trainable) tensors into the policy's rollout engine where it has one
    (``rollout.engine=vllm``); the sync's seconds and MiB."""
    if not isinstance(policy, VLLMPolicy):
        return {}
    try:
        stats = policy.sync_weights(names)
    except EngineUnavailable as err:
        raise ConfigError(str(err)) from None
    return {"engine_sync_s": stats.seconds, "engine_sync_mb": stats.bytes / 2**20}


def run_iteration(
    cfg: RunConfig,
    iteration: int,
    learner: Learner,
    policy: Policy,
    runner: EnvGroupRunner,
    progress,
    telemetry: BlockTelemetry | None = None,
) -> dict:
    """One rollout -> advantages -> update cycle; returns its metrics record (with the per-block
    ``telemetry`` fields when given)."""
    t0 = time.perf_counter()
    learner.model.eval()
    with capturing_prefix(policy, learner.prefix):
        batch = collect_rollouts(
            policy,
            runner,
            task_seeds(cfg.env, cfg.trainer.seed, iteration, cfg.rollout.batch_size),
            cfg.rollout.group_size,
            max_steps=cfg.env.max_steps,
            prompt_cfg=cfg.agent,
            temperature=cfg.rollout.temperature,
            invalid_penalty=cfg.rollout.invalid_penalty,
            on_step=progress.on_rollout_step,
        )
    t1 = time.perf_counter()
    engine_stats = policy.take_stats() if isinstance(policy, VLLMPolicy) else {}
    advantages = compute_advantages(cfg, batch)
    update = {}
    if learner.trainable:
        progress.start_update(len(batch))
        if telemetry is not None:
            telemetry.begin_iteration()
        hook = telemetry.record_gradients if telemetry is not None else None
        update = update_learner(cfg, learner, policy, batch, advantages, progress.on_update_step, hook)
        if telemetry is not None:
            update.update(telemetry.end_iteration())
        check_skipped_steps(cfg, learner, update, iteration)
        update.update(sync_engine(policy, learner.names))
    if learner.prefix is not None:
        learner.prefix.clear()  # still valid, but the next rollout meets new states: free the memory
    return {
        "iteration": iteration,
        "success_rate": batch.success_rate,
        "mean_return": batch.mean_return,
        "invalid_action_rate": batch.invalid_action_rate,
        "loss": update.get("loss", 0.0),
        "kl": update.get("kl", 0.0),
        "rows": len(batch),
        "mean_response_tokens": float(np.mean([len(r) for r in batch.response_ids])),
        **{k: v for k, v in update.items() if k not in ("loss", "kl")},
        **anchor_stats(cast("Sequence[Hashable]", batch.group_ids), batch.anchors),  # an (N,) array
        **engine_stats,
        "env_worker_restarts": runner.restarts,
        "rollout_s": t1 - t0,
        "update_s": time.perf_counter() - t1,
    }


def check_skipped_steps(cfg: RunConfig, learner: Learner, update: dict, iteration: int) -> None:
    """Counts optimizer steps skipped in a row for a non-finite loss or gradient; stops the run at
    ``trainer.max_skipped_steps`` (the weights are still those of the last good step)."""
    if update.get("optimizer_steps", 0) > 0:
        learner.skipped_in_a_row = 0
    else:
        learner.skipped_in_a_row += int(update.get("skipped_steps", 0))
    if learner.skipped_in_a_row >= cfg.trainer.max_skipped_steps:
        out = Path(cfg.trainer.output_dir)
        raise TrainingStopped(
            f"iteration {iteration + 1}: {learner.skipped_in_a_row} update steps in a row had a non-finite "
            f"loss or gradient (trainer.max_skipped_steps={cfg.trainer.max_skipped_steps}); stopped. "
            f"The last good checkpoint is {latest_checkpoint(out) or 'none'}; lower trainer.lr or "
            "try model.dtype=float32"
        )


def memory_usage() -> dict[str, float]:
    """This process's memory in MiB: ``max_rss_mb``, the peak resident set so far (a high-water mark,
    from ``getrusage``), and ``rss_mb``, the resident set now (from ``/proc/self/statm``, where there
    is one): a leak shows as ``rss_mb`` growing from iteration to iteration."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    usage = {"max_rss_mb": peak / (2**20 if sys.platform == "darwin" else 2**10)}
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        usage["rss_mb"] = pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return usage


def append_row(metrics_file: BinaryIO, row: dict, out: Path) -> None:
    """Appends one ``metrics.jsonl`` line, whole or not at all: a failed write is cut back off, so a
    resume reads only whole lines; a full disk stops the run with ``DiskFull``."""
    data = memoryview((json.dumps(row) + "\n").encode())
    start = metrics_file.tell()
    try:
        while data:
            data = data[metrics_file.write(data) :]
    except OSError as err:
        with contextlib.suppress(OSError):
            metrics_file.truncate(start)
        if is_disk_full(err):
            done = row["iteration"] + (row.get("kind") != "eval")  # an eval row counts iterations done
            raise disk_full(f"appending to metrics.jsonl after iteration {done}", out) from None
        raise


def write_json(path: Path, value: dict) -> None:
    """Writes ``value`` under a temporary name, then renames it: readers never see half a file."""
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(value, indent=1))
    staging.replace(path)


def train(cfg: RunConfig) -> Path:
    """Runs native training (and evaluation) and returns the output folder (``lamina.backend.train``
    picks this or the verl backend).

    Order: validate, build the learner (model on ``trainer.device``, frozen blocks, optimizer),
    resume, evaluate the base model, then per iteration rollout -> advantages -> update -> logs,
    periodic evaluation and checkpoints; finally the held-out evaluation and ``curves.png``.
    """
    blocks = validate(cfg)
    out = Path(cfg.trainer.output_dir)
    # One run per folder, one writer at a time (lamina.trainer.run_folder): held until the run ends.
    with claim_run_folder(out, cfg.trainer.resume, cfg.trainer.overwrite):
        return _train(cfg, blocks, out)


def _train(cfg: RunConfig, blocks: list[int], out: Path) -> Path:
    """``train`` in its claimed output folder."""
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    torch.manual_seed(cfg.trainer.seed)
    learner = build_learner(cfg, blocks)
    telemetry = None  # theta_0 is the start, so it is taken before a resume loads trained tensors
    if cfg.logging.telemetry and learner.trainable:
        initial = learner.reference.initial if learner.reference is not None else None
        frozen_prefix = cfg.trainer.update.frozen_prefix
        telemetry = BlockTelemetry(learner.model, learner.trainable, initial, frozen_prefix)
    policy = make_policy(cfg, learner.model, learner.tokenizer)
    start = resume(cfg, learner, out)
    sync_engine(policy, learner.names)  # a resumed run's trained tensors (and a LoRA check) before sampling
    scheduler = make_scheduler(learner.optimizer, cfg.trainer.schedule, cfg.trainer.iterations, start)
    config = cast("dict[str, Any]", OmegaConf.to_container(OmegaConf.structured(cfg)))  # a dataclass: a dict
    with (
        make_runner(cfg, cfg.rollout.batch_size * cfg.rollout.group_size) as runner,
        TrainingProgress(cfg, enabled=cfg.trainer.progress) as progress,
        MetricsLogger(cfg.logging, out, config) as logger,
        GracefulStop() as stop,
        # Unbuffered: a row is on disk once written, and a failed write leaves nothing to flush later.
        (out / "metrics.jsonl").open("ab" if start else "wb", buffering=0) as metrics_file,
    ):

        def record(row: dict) -> None:
            append_row(metrics_file, row, out)
            logger.log(row, step=row["iteration"])
            progress.report(row)

        if start == 0 and cfg.eval.base and cfg.eval.episodes > 0:
            base = run_eval(cfg, policy, progress, 0, "eval (base model)")
            write_json(out / "eval_base.json", base)
            logger.log(base, step=0)
            progress.report(base)
        for iteration in range(start, cfg.trainer.iterations):
            progress.start_iteration(iteration)
            last = iteration == cfg.trainer.iterations - 1
            with stop.iteration():
                row = run_iteration(cfg, iteration, learner, policy, runner, progress, telemetry)
                row["lr"] = learner.optimizer.param_groups[0]["lr"]
                row.update(memory_usage())
                scheduler.step()
                record(row)
                if (
                    cfg.eval.every
                    and (iteration + 1) % cfg.eval.every == 0
                    and not last
                    and cfg.eval.episodes
                ):
                    record(run_eval(cfg, policy, progress, iteration + 1, f"eval @{iteration + 1}"))
                every = cfg.trainer.save_every and (iteration + 1) % cfg.trainer.save_every == 0
                if last or every or stop.requested:
                    ckpt = save(cfg, learner, out, iteration)
                    prune_checkpoints(out, cfg.trainer.keep_checkpoints)
            if stop.requested and not last:
                raise StoppedBySignal(
                    f"{stop.requested} after iteration {iteration + 1}: saved {ckpt}; continue with "
                    f"trainer.resume=true trainer.output_dir={out}"
                )
        if cfg.eval.episodes > 0:
            result = run_eval(cfg, policy, progress, cfg.trainer.iterations, "eval (trained)")
            write_json(out / "eval.json", result)
            logger.log(result, step=cfg.trainer.iterations)
            progress.report(result)
    if cfg.logging.curves:
        plot_curves(out)
    return out
