"""The native training loop: rollout -> advantages -> PPO update, on the chosen blocks only.

lamina train env=textworld algorithm=grpo layers=[15] trainer.iterations=10
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.choose import SCORE_MODES, ChoicePolicy
from lamina.agents.models import load_model, model_num_blocks, resolve_device, resolve_dtype
from lamina.agents.policy import HFPolicy
from lamina.agents.prefix import PrefixStore, prefix_start
from lamina.algorithms.advantages import anchor_stats, get_estimator
from lamina.envs import resolve_env_id
from lamina.envs.runner import EnvGroupRunner
from lamina.errors import ConfigError, StoppedBySignal, TrainingStopped
from lamina.trainer.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_tensors,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from lamina.trainer.config import RunConfig
from lamina.trainer.evaluate import evaluate
from lamina.trainer.layers import (
    ReferenceWeights,
    apply_layer_selection,
    param_groups,
    parse_layers,
    trainable_parameter_names,
)
from lamina.trainer.logs import MetricsLogger, plot_curves
from lamina.trainer.precision import all_finite, keep_fp32_master_weights
from lamina.trainer.progress import TrainingProgress
from lamina.trainer.restore import load_init_from
from lamina.trainer.rollout import Policy, RolloutBatch, collect_rollouts
from lamina.trainer.schedule import check_schedule, make_scheduler
from lamina.trainer.signals import GracefulStop
from lamina.trainer.update import ppo_update


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
    if cfg.backend not in ("native", "verl"):
        raise ConfigError(f"backend={cfg.backend!r}; valid: native, verl")
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


def task_seeds(cfg: RunConfig, iteration: int) -> list[int]:
    """The B task seeds of an iteration, drawn without replacement from the training tasks."""
    rng = np.random.default_rng([cfg.trainer.seed, iteration])
    high = cfg.env.train_tasks or (2**31 - 1 if cfg.env.eval_kwargs else cfg.env.eval_seed_offset)
    size = min(cfg.rollout.batch_size, high)
    return [int(s) for s in rng.choice(high, size=size, replace=False)]


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


def make_runner(cfg: RunConfig, count: int, evaluation: bool = False) -> EnvGroupRunner:
    """``count`` environments, in ``rollout.env_workers`` worker processes (0: in this process)."""
    kwargs = {**cfg.env.kwargs, **(cfg.env.eval_kwargs if evaluation else {})}
    return EnvGroupRunner(
        cfg.env.name,
        count,
        num_workers=cfg.rollout.env_workers,
        env_kwargs=kwargs,
        max_episode_steps=cfg.env.max_steps,
    )


def make_policy(cfg: RunConfig, model, tokenizer) -> Policy:
    """The policy of ``agent.mode``: ``generate`` (text in tags) or ``choose`` (likelihood of actions)."""
    if cfg.agent.mode == "choose":
        return ChoicePolicy(
            model, tokenizer, micro_batch_size=cfg.rollout.micro_batch_size, score=cfg.agent.choose_score
        )
    return HFPolicy(
        model,
        tokenizer,
        max_new_tokens=cfg.rollout.max_new_tokens,
        micro_batch_size=cfg.rollout.micro_batch_size,
    )


@dataclass
class Learner:
    """The model and what updates it: trainable names and tensors, optimizer, KL reference."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    blocks: list[int]
    names: list[str]
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    reference: ReferenceWeights | None
    shuffle: torch.Generator  # mini-batch order
    skipped_in_a_row: int = 0  # consecutive optimizer steps skipped for a non-finite loss/gradient
    prefix: PrefixStore | None = None  # states entering the lowest trainable block, per iteration


def build_learner(cfg: RunConfig, blocks: list[int]) -> Learner:
    """Loads the model onto ``trainer.device``, freezes all but the chosen blocks, keeps fp32 master
    weights for them when the model computes in a lower precision, and builds AdamW and the reference."""
    model, tokenizer = load_model(cfg.model, resolve_device(cfg.trainer.device))
    try:
        if cfg.init_from:
            load_init_from(cfg.init_from, model, cfg.model)  # before the KL reference copies its tensors
        names = trainable_parameter_names(
            model, blocks, cfg.modules, cfg.trainer.train_embeddings, cfg.trainer.train_lm_head
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    trainable = apply_layer_selection(model, names)
    keep_fp32_master_weights(model, trainable)
    # AdamW refuses an empty parameter list; with layers=none it holds one unused placeholder.
    groups = (
        param_groups(model, names, cfg.trainer.lr, cfg.trainer.lr_multipliers) if names else [torch.zeros(1)]
    )
    optimizer = torch.optim.AdamW(groups, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    reference = ReferenceWeights(trainable) if cfg.algorithm.loss.kl_coef > 0 and trainable else None
    shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
    start = prefix_start(model, names) if cfg.trainer.update.frozen_prefix else 0
    prefix = PrefixStore(start) if start > 0 else None
    return Learner(model, tokenizer, blocks, names, trainable, optimizer, reference, shuffle, prefix=prefix)


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
            f"iteration {iteration}: the trained weights hold NaN or Inf, so no checkpoint was written; "
            f"the last good one is {latest_checkpoint(out) or 'none'}"
        )
    rng_tensors, rng_states = capture_rng(learner.shuffle)
    tensors = {"rng": rng_tensors}
    if learner.reference is not None:
        tensors["reference"] = dict(zip(learner.names, learner.reference.initial, strict=True))
    state = {
        "blocks": learner.blocks,
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


def update_learner(cfg: RunConfig, learner: Learner, policy: Policy, batch, advantages, on_micro_batch=None):
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
    )


def run_iteration(
    cfg: RunConfig,
    iteration: int,
    learner: Learner,
    policy: Policy,
    runner: EnvGroupRunner,
    progress,
) -> dict:
    """One rollout -> advantages -> update cycle; returns its metrics record."""
    t0 = time.perf_counter()
    learner.model.eval()
    with capturing_prefix(policy, learner.prefix):
        batch = collect_rollouts(
            policy,
            runner,
            task_seeds(cfg, iteration),
            cfg.rollout.group_size,
            max_steps=cfg.env.max_steps,
            prompt_cfg=cfg.agent,
            temperature=cfg.rollout.temperature,
            invalid_penalty=cfg.rollout.invalid_penalty,
            on_step=progress.on_rollout_step,
        )
    t1 = time.perf_counter()
    advantages = compute_advantages(cfg, batch)
    update = {}
    if learner.trainable:
        progress.start_update(len(batch))
        update = update_learner(cfg, learner, policy, batch, advantages, progress.on_update_step)
        check_skipped_steps(cfg, learner, update, iteration)
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
        **anchor_stats(batch.group_ids, batch.anchors),
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
            f"iteration {iteration}: {learner.skipped_in_a_row} update steps in a row had a non-finite "
            f"loss or gradient (trainer.max_skipped_steps={cfg.trainer.max_skipped_steps}); stopped. "
            f"The last good checkpoint is {latest_checkpoint(out) or 'none'}; lower trainer.lr or "
            "try model.dtype=float32"
        )


def held_out_eval(cfg: RunConfig, policy: Policy, progress, label: str) -> dict:
    """Held-out evaluation of the current weights (``eval.episodes`` episodes, in chunks of
    ``rollout.batch_size * rollout.group_size``); ``lamina train`` and ``lamina eval`` share it."""
    policy.model.eval()
    progress.start_eval(cfg.eval.episodes, label)
    count = min(cfg.eval.episodes, cfg.rollout.batch_size * cfg.rollout.group_size)
    with make_runner(cfg, count, evaluation=True) as eval_runner:
        return evaluate(cfg, policy, eval_runner, cfg.eval.episodes, progress)


def run_eval(cfg: RunConfig, policy: Policy, progress, iteration: int, label: str) -> dict:
    """``held_out_eval`` as a ``metrics.jsonl`` record of ``iteration``."""
    return {"kind": "eval", "iteration": iteration, **held_out_eval(cfg, policy, progress, label)}


def write_json(path: Path, value: dict) -> None:
    """Writes ``value`` under a temporary name, then renames it: readers never see half a file."""
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(value, indent=1))
    staging.replace(path)


def train(cfg: RunConfig) -> Path:
    """Runs training (and evaluation) and returns the output folder.

    Order: validate, build the learner (model on ``trainer.device``, frozen blocks, optimizer),
    resume, evaluate the base model, then per iteration rollout -> advantages -> update -> logs,
    periodic evaluation and checkpoints; finally the held-out evaluation and ``curves.png``.
    """
    if cfg.backend == "verl":
        from lamina.integrations.verl.launch import run

        return run(cfg)
    blocks = validate(cfg)
    out = Path(cfg.trainer.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    torch.manual_seed(cfg.trainer.seed)
    learner = build_learner(cfg, blocks)
    policy = make_policy(cfg, learner.model, learner.tokenizer)
    start = resume(cfg, learner, out)
    scheduler = make_scheduler(learner.optimizer, cfg.trainer.schedule, cfg.trainer.iterations, start)
    config = OmegaConf.to_container(OmegaConf.structured(cfg))
    with (
        make_runner(cfg, cfg.rollout.batch_size * cfg.rollout.group_size) as runner,
        TrainingProgress(cfg, enabled=cfg.trainer.progress) as progress,
        MetricsLogger(cfg.logging, out, config) as logger,
        GracefulStop() as stop,
        (out / "metrics.jsonl").open("a" if start else "w") as metrics_file,
    ):

        def record(row: dict) -> None:
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
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
                row = run_iteration(cfg, iteration, learner, policy, runner, progress)
                row["lr"] = learner.optimizer.param_groups[0]["lr"]
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
                    f"{stop.requested} after iteration {iteration}: saved {ckpt}; continue with "
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
