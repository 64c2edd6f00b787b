"""The native training loop: rollout -> advantages -> PPO update, on the chosen blocks only.

lamina train env=textworld algorithm=grpo layers=[15] trainer.iterations=10
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import load_model, model_num_blocks
from lamina.agents.policy import HFPolicy
from lamina.algorithms.advantages import anchor_stats, get_estimator
from lamina.envs import resolve_env_id
from lamina.envs.runner import EnvGroupRunner
from lamina.errors import ConfigError
from lamina.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lamina.trainer.config import RunConfig
from lamina.trainer.evaluate import evaluate
from lamina.trainer.layers import (
    ReferenceWeights,
    apply_layer_selection,
    param_groups,
    parse_layers,
    trainable_parameter_names,
)
from lamina.trainer.progress import TrainingProgress
from lamina.trainer.rollout import Policy, RolloutBatch, collect_rollouts
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
    if cfg.trainer.iterations < 0 or cfg.env.max_steps < 1:
        raise ConfigError("trainer.iterations must be >= 0 and env.max_steps >= 1")
    if cfg.agent.mode not in ("generate", "choose"):
        raise ConfigError(f"agent.mode={cfg.agent.mode!r}; valid: generate, choose")
    if cfg.rollout.env_workers < 0:
        raise ConfigError(f"rollout.env_workers={cfg.rollout.env_workers} must be >= 0 (0: in this process)")
    if cfg.backend != "native":
        raise ConfigError(f"backend={cfg.backend!r} is not available yet; valid: native")
    return blocks


def task_seeds(cfg: RunConfig, iteration: int) -> list[int]:
    """The B task seeds of an iteration, drawn without replacement from the training tasks."""
    rng = np.random.default_rng([cfg.trainer.seed, iteration])
    high = cfg.env.train_tasks or 2**31 - 1
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
        return ChoicePolicy(model, tokenizer, micro_batch_size=cfg.rollout.micro_batch_size)
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
    names: list[str]
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    reference: ReferenceWeights | None


def build_learner(cfg: RunConfig, blocks: list[int]) -> Learner:
    model, tokenizer = load_model(cfg.model)
    names = trainable_parameter_names(
        model, blocks, cfg.modules, cfg.trainer.train_embeddings, cfg.trainer.train_lm_head
    )
    trainable = apply_layer_selection(model, names)
    # AdamW refuses an empty parameter list; with layers=none it holds one unused placeholder.
    groups = (
        param_groups(model, names, cfg.trainer.lr, cfg.trainer.lr_multipliers) if names else [torch.zeros(1)]
    )
    optimizer = torch.optim.AdamW(groups, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    reference = ReferenceWeights(trainable) if cfg.algorithm.loss.kl_coef > 0 and trainable else None
    return Learner(model, tokenizer, names, trainable, optimizer, reference)


def resume(cfg: RunConfig, learner: Learner, out: Path) -> int:
    """Loads the newest good checkpoint when ``trainer.resume``; returns the next iteration."""
    ckpt = latest_checkpoint(out) if cfg.trainer.resume else None
    if ckpt is None:
        return 0
    state = load_checkpoint(ckpt, learner.model, learner.optimizer)
    if learner.reference is not None and (ckpt / "reference.pt").exists():
        learner.reference.initial = torch.load(ckpt / "reference.pt")
    torch.manual_seed(cfg.trainer.seed + state["iteration"] + 1)
    return state["iteration"] + 1


def run_iteration(
    cfg: RunConfig,
    iteration: int,
    learner: Learner,
    policy: Policy,
    runner: EnvGroupRunner,
    progress,
    generator: torch.Generator,
) -> dict:
    """One rollout -> advantages -> update cycle; returns its metrics record."""
    t0 = time.perf_counter()
    learner.model.eval()
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
        update = ppo_update(
            learner.model,
            learner.optimizer,
            learner.trainable,
            batch.prompt_ids,
            batch.response_ids,
            batch.old_log_probs,
            advantages,
            cfg.algorithm.loss,
            cfg.trainer.update,
            learner.tokenizer.pad_token_id,
            cfg.algorithm.loss.loss_scale_factor or cfg.rollout.max_new_tokens,
            policy.log_prob_temperature(cfg.rollout.temperature),
            learner.reference,
            generator,
        )
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


def train(cfg: RunConfig) -> Path:
    """Runs training (and evaluation) and returns the output folder."""
    blocks = validate(cfg)
    out = Path(cfg.trainer.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    torch.manual_seed(cfg.trainer.seed)
    generator = torch.Generator().manual_seed(cfg.trainer.seed)
    learner = build_learner(cfg, blocks)
    policy = make_policy(cfg, learner.model, learner.tokenizer)
    start = resume(cfg, learner, out)
    with (
        make_runner(cfg, cfg.rollout.batch_size * cfg.rollout.group_size) as runner,
        TrainingProgress(cfg, enabled=cfg.trainer.progress) as progress,
        (out / "metrics.jsonl").open("a" if start else "w") as metrics_file,
    ):
        for iteration in range(start, cfg.trainer.iterations):
            record = run_iteration(cfg, iteration, learner, policy, runner, progress, generator)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            progress.end_iteration(record)
            if iteration == cfg.trainer.iterations - 1 or (
                cfg.trainer.save_every and (iteration + 1) % cfg.trainer.save_every == 0
            ):
                extras = {"reference.pt": learner.reference.initial} if learner.reference is not None else {}
                save_checkpoint(
                    out,
                    iteration,
                    learner.model,
                    learner.names,
                    learner.optimizer,
                    {"blocks": blocks},
                    extras,
                )
        if cfg.eval.episodes > 0:
            learner.model.eval()
            progress.start_eval(cfg.eval.episodes)
            count = min(cfg.eval.episodes, runner.num_envs)
            with make_runner(cfg, count, evaluation=True) as eval_runner:
                result = evaluate(cfg, policy, eval_runner, cfg.eval.episodes, progress)
            (out / "eval.json").write_text(json.dumps(result, indent=1))
    return out
