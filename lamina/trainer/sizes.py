"""What a layer selection trains, counted without loading weights: the model is built on PyTorch's
``meta`` device (shapes only), the selection applied to it (LoRA adapters injected too), and the
selected tensors' elements summed. ``lamina sweep`` reports each arm's count before training.

    trainable_parameter_count(cfg)            # cfg.layers on cfg.model
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from lamina.agents.models import ModelConfig, load_model, smollm2_checkpoint
from lamina.trainer.config import RunConfig
from lamina.trainer.factories import selected_names
from lamina.trainer.layers import find_blocks, parse_layers
from lamina.trainer.lora import count_parameters


def model_skeleton(cfg: ModelConfig) -> PreTrainedModel:
    """The model's module tree with ``meta`` tensors (the tiny random model: the real one, it is
    small and its vocabulary comes from the tokenizer)."""
    if cfg.name == "tiny-random" and not cfg.path:
        return load_model(cfg)[0]
    source = cfg.path or str(smollm2_checkpoint())
    config = AutoConfig.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)


def trainable_parameter_count(cfg: RunConfig, skeleton: PreTrainedModel | None = None) -> int:
    """The number of scalars ``cfg.layers`` (with ``modules``, embeddings, LM head) trains.

    Args:
        skeleton: ``model_skeleton(cfg.model)``, to reuse across calls; it is not changed.
    Raises:
        ValueError: a bad layer spec, naming it.
    """
    model = copy.deepcopy(skeleton if skeleton is not None else model_skeleton(cfg.model))
    blocks = parse_layers(cfg.layers, len(find_blocks(model)[1]))
    return count_parameters(model, selected_names(cfg, model, blocks))
