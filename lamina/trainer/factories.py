"""What a run is built from: its environments, its policy and its learner (model, trainable
tensors, optimizer, KL reference). ``lamina train``, ``lamina eval``, the study and the benchmarks
build them the same way through these functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import load_model, resolve_device
from lamina.agents.policy import HFPolicy
from lamina.agents.prefix import PrefixStore, prefix_start
from lamina.envs.runner import EnvGroupRunner
from lamina.errors import ConfigError
from lamina.trainer.config import RunConfig
from lamina.trainer.layers import (
    ReferenceWeights,
    apply_layer_selection,
    param_groups,
    trainable_parameter_names,
)
from lamina.trainer.precision import keep_fp32_master_weights
from lamina.trainer.restore import load_init_from
from lamina.trainer.rollout import Policy


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


def load_start_model(cfg: RunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model on ``trainer.device``, with ``init_from``'s trained tensors when set."""
    model, tokenizer = load_model(cfg.model, resolve_device(cfg.trainer.device))
    if cfg.init_from:
        try:
            load_init_from(cfg.init_from, model, cfg.model)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return model, tokenizer


def select_trainable(
    cfg: RunConfig, model: PreTrainedModel, blocks: list[int], lr: float, weight_decay: float
) -> tuple[list[str], list[torch.nn.Parameter], torch.optim.Optimizer]:
    """Freezes all but the chosen blocks (and modules, embeddings, LM head), keeps fp32 master weights
    for them when the model computes in a lower precision, and builds AdamW over them with the
    per-block ``trainer.lr_multipliers``. Returns ``(names, tensors, optimizer)``."""
    try:
        names = trainable_parameter_names(
            model, blocks, cfg.modules, cfg.trainer.train_embeddings, cfg.trainer.train_lm_head
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    trainable = apply_layer_selection(model, names)
    keep_fp32_master_weights(model, trainable)
    # AdamW refuses an empty parameter list; with layers=none it holds one unused placeholder.
    groups = param_groups(model, names, lr, cfg.trainer.lr_multipliers) if names else [torch.zeros(1)]
    return names, trainable, torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def build_learner(cfg: RunConfig, blocks: list[int]) -> Learner:
    """Loads the model (and ``init_from``) onto ``trainer.device``, selects the trainable blocks, and
    builds AdamW, the KL reference and the frozen-prefix store."""
    # init_from is loaded before the KL reference copies the trainable tensors.
    model, tokenizer = load_start_model(cfg)
    names, trainable, optimizer = select_trainable(
        cfg, model, blocks, cfg.trainer.lr, cfg.trainer.weight_decay
    )
    reference = ReferenceWeights(trainable) if cfg.algorithm.loss.kl_coef > 0 and trainable else None
    shuffle = torch.Generator().manual_seed(cfg.trainer.seed)
    start = prefix_start(model, names) if cfg.trainer.update.frozen_prefix else 0
    prefix = PrefixStore(start) if start > 0 else None
    return Learner(model, tokenizer, blocks, names, trainable, optimizer, reference, shuffle, prefix=prefix)
