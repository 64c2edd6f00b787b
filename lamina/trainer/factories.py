"""What a run is built from: its environments, its policy and its learner (model, trainable
tensors, optimizer, KL reference). ``lamina train``, ``lamina eval``, the study and the benchmarks
build them the same way through these functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import (
    load_model,
    resolve_device,
    resolve_dtype,
    smollm2_checkpoint,
    tiny_random_model,
)
from lamina.agents.policy import HFPolicy
from lamina.agents.prefix import PrefixStore, prefix_start
from lamina.agents.vllm_engine import EngineSpec, EngineUnavailable, VLLMPolicy, get_engine, saved_model
from lamina.envs.runner import EnvGroupRunner
from lamina.errors import ConfigError
from lamina.paths import cache_dir
from lamina.trainer.config import RunConfig
from lamina.trainer.layers import (
    ReferenceWeights,
    apply_layer_selection,
    param_groups,
    split_lora,
    trainable_parameter_names,
)
from lamina.trainer.lora import LoraSpec, inject_lora
from lamina.trainer.precision import keep_fp32_master_weights
from lamina.trainer.restore import load_init_from
from lamina.trainer.rollout import Policy

ROLLOUT_ENGINES = ("hf", "vllm")  # rollout.engine


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
    """The policy of ``agent.mode``: ``generate`` (text in tags) or ``choose`` (likelihood of actions);
    generate mode samples with ``rollout.engine`` (HF generate or vLLM)."""
    if cfg.rollout.engine not in ROLLOUT_ENGINES:
        raise ConfigError(f"rollout.engine={cfg.rollout.engine!r}; valid: {', '.join(ROLLOUT_ENGINES)}")
    if cfg.rollout.engine == "vllm":
        if cfg.agent.mode == "choose":
            raise ConfigError(
                "rollout.engine=vllm samples generate mode only; agent.mode=choose scores candidates in "
                "torch: use rollout.engine=hf or agent.mode=generate"
            )
        return make_vllm_policy(cfg, model, tokenizer)
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


def make_vllm_policy(cfg: RunConfig, model, tokenizer) -> VLLMPolicy:
    """vLLM's engine started from the checkpoint the trainer loaded (the tiny random model is saved
    first), then given the trainer's current tensors where they may differ from that checkpoint."""
    if cfg.model.path:
        source = cfg.model.path
    elif cfg.model.name == "tiny-random":  # seeded, so one saved copy per shape serves every run
        shape = f"tiny-random-{cfg.model.tiny_layers}x{cfg.model.tiny_hidden}"
        fresh = tiny_random_model(tokenizer, cfg.model)  # not ``model``: it may hold init_from's tensors
        source = str(saved_model(fresh, tokenizer, cache_dir() / "models" / shape))
    else:
        source = str(smollm2_checkpoint())
    dtype = str(resolve_dtype(cfg.model.dtype, next(model.parameters()).device)).removeprefix("torch.")
    spec = EngineSpec(
        source,
        dtype,
        cfg.rollout.vllm_memory,
        cfg.rollout.vllm_max_model_len,
        cfg.trainer.seed,
    )
    try:
        llm, reused = get_engine(spec)
    except EngineUnavailable as err:
        raise ConfigError(str(err)) from None
    policy = VLLMPolicy(
        model,
        tokenizer,
        llm,
        max_new_tokens=cfg.rollout.max_new_tokens,
        micro_batch_size=cfg.rollout.micro_batch_size,
    )
    if reused or cfg.init_from:  # the engine holds another run's weights, or the checkpoint's only
        policy.sync_weights()
    return policy


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
    per-block ``trainer.lr_multipliers``. Returns ``(names, tensors, optimizer)``.

    ``layers=lora:R@...`` first adds rank-R adapters to the blocks' linear layers
    (``lamina.trainer.lora``); then only the adapters (and embeddings/LM head when asked) train."""
    try:
        names = selected_names(cfg, model, blocks)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    trainable = apply_layer_selection(model, names)
    keep_fp32_master_weights(model, trainable)
    # AdamW refuses an empty parameter list; with layers=none it holds one unused placeholder.
    groups = param_groups(model, names, lr, cfg.trainer.lr_multipliers) if names else [torch.zeros(1)]
    return names, trainable, torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def selected_names(cfg: RunConfig, model: PreTrainedModel, blocks: list[int]) -> list[str]:
    """The trainable parameters' names, in ``model.named_parameters()`` order; for a LoRA spec the
    adapters are injected into ``model`` here."""
    rank, _ = split_lora(cfg.layers)
    emb, head = cfg.trainer.train_embeddings, cfg.trainer.train_lm_head
    if rank is None:
        return trainable_parameter_names(model, blocks, cfg.modules, emb, head)
    if getattr(cfg.rollout, "engine", "hf") != "hf":
        # The engine receives the trained tensors by name; adapter tensors name no weight of its own.
        raise ValueError(
            f"layers={cfg.layers!r} with rollout.engine={cfg.rollout.engine!r}: LoRA adapters are not synced "
            "into that engine; valid with LoRA: rollout.engine=hf"
        )
    adapters = set(inject_lora(model, LoraSpec(rank, blocks), cfg.modules))
    adapters |= set(trainable_parameter_names(model, [], cfg.modules, emb, head))
    return [name for name, _ in model.named_parameters() if name in adapters]


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
