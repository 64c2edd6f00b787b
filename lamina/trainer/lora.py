"""LoRA as a layer selection: ``layers=lora:R@<blocks>`` trains rank-R adapters, nothing else.

The spec is ``lora:R@SEL``, ``SEL`` being any other layer spec (``all``, ``14``, ``10-14``,
``middle:K``, ``top:K@<sweep dir>``, ``[3, 5]``); ``lora:R`` alone means ``lora:R@all``. ``modules``
narrows the adapted layers as it narrows a block (``attn``, ``mlp`` or a regex): every
``nn.Linear`` inside a chosen block that ``modules`` keeps gets an adapter, W x + (alpha/R) B A x,
with A (R, in) random, B (out, R) zero, so the adapted model starts as the base model.

The adapters are PEFT's (``peft.inject_adapter_in_model``), injected in place: the model stays the
same ``transformers`` class, its block list and decoder stay where ``lamina.trainer.layers`` and the
frozen-prefix forward (``lamina.agents.prefix``) find them, and a base weight ``<m>.weight`` becomes
``<m>.base_layer.weight``. Only ``<m>.lora_A.default.weight`` and ``<m>.lora_B.default.weight``
train, so checkpoints hold the adapters alone; loading such a checkpoint into a plain model merges
it (W += alpha/R B A, ``merge_lora_tensors``), which is how ``lamina eval``, ``lamina export`` and
``init_from`` read a LoRA run.

alpha is fixed at 32, as in "LoRA Without Regret" (Schulman and Thinking Machines Lab, 2025): with
the 1/R scaling the best learning rate hardly depends on R, and it is about 10x full fine-tuning's
(``lamina.study.arms`` applies that rule to LoRA arms; ``lamina train`` uses ``trainer.lr`` as given).

    names = inject_lora(model, LoraSpec(rank=1, blocks=[0, 1, 2, 3]), modules="all")
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lamina.trainer.layers import MODULE_PATTERNS, find_blocks

LORA_ALPHA = 32
ADAPTER = "default"  # PEFT's adapter name; it appears in the trained tensors' names


@dataclass(frozen=True)
class LoraSpec:
    """Rank-``rank`` adapters on the linear layers of ``blocks``; ``scaling`` = alpha / rank."""

    rank: int
    blocks: list[int]
    alpha: int = LORA_ALPHA

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def lora_targets(model: nn.Module, blocks: Sequence[int], modules: str = "all") -> list[str]:
    """Full names of the ``nn.Linear`` modules inside ``blocks`` that ``modules`` keeps."""
    prefix, _ = find_blocks(model)
    pattern = re.compile(MODULE_PATTERNS.get(modules, modules))
    wanted = {f"{prefix}.{b}." for b in blocks}
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        block_prefix = next((p for p in wanted if name.startswith(p)), None)
        # The module patterns match parameter names (".self_attn.q_proj.weight"): test "<name>.".
        if block_prefix is not None and pattern.search(name[len(block_prefix) - 1 :] + "."):
            targets.append(name)
    return targets


def inject_lora(model: nn.Module, spec: LoraSpec, modules: str = "all") -> list[str]:
    """Adds the adapters to ``model`` in place; returns their parameter names (the trainable ones),
    in ``model.named_parameters()`` order. A (R, in) draws from torch's global generator.

    Raises:
        ValueError: no linear layer in the chosen blocks matches ``modules``.
    """
    targets = lora_targets(model, spec.blocks, modules)
    if not targets:
        raise ValueError(
            f"layers='lora:{spec.rank}@...' with modules={modules!r}: blocks {list(spec.blocks)} hold no "
            "nn.Linear layer to adapt; valid: modules=all, attn, mlp or a regex matching linear layers"
        )
    from peft import LoraConfig, inject_adapter_in_model  # ~5 s to import: only for LoRA runs

    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, target_modules=targets, bias="none"
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    return [name for name, _ in model.named_parameters() if is_lora_name(name)]


def is_lora_name(name: str) -> bool:
    """Whether a parameter name is a LoRA adapter's (``...lora_A.default.weight``)."""
    return f".lora_A.{ADAPTER}." in name or f".lora_B.{ADAPTER}." in name


def base_name(name: str) -> str:
    """The plain model's name of a parameter of an adapted model (``base_layer`` removed)."""
    return name.replace(".base_layer.", ".")


def lora_deltas(tensors: Mapping[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Each adapter pair of a checkpoint as the fp32 change it makes to its layer's weight,
    ``scaling * B (out, R) @ A (R, in)``, keyed by the plain model's weight name.

    Raises:
        ValueError: an adapter without its partner.
    """
    deltas = {}
    for name_a in sorted(n for n in tensors if f".lora_A.{ADAPTER}." in n):
        module = name_a.split(f".lora_A.{ADAPTER}.")[0]
        name_b = f"{module}.lora_B.{ADAPTER}.weight"
        if name_b not in tensors:
            raise ValueError(f"LoRA tensor {name_a!r} has no partner {name_b!r}")
        deltas[f"{module}.weight"] = scaling * (tensors[name_b].float() @ tensors[name_a].float())
    return deltas


def merge_lora_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], scaling: float) -> list[str]:
    """Adds each adapter pair of a checkpoint into the plain ``model``'s weights in place:
    W (out, in) += scaling * B (out, R) @ A (R, in), computed in fp32. Returns the merged weights'
    names.

    Raises:
        ValueError: an adapter without its partner, or one whose layer the model lacks.
    """
    params = dict(model.named_parameters())
    deltas = lora_deltas(tensors, scaling)
    for target, delta in deltas.items():
        if target not in params:
            raise ValueError(f"LoRA adapter for {target!r}: the model has no such weight")
        weight = params[target]
        with torch.no_grad():
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return list(deltas)


def count_parameters(model: nn.Module, names: Sequence[str]) -> int:
    """The number of scalars in the named parameters (tied tensors counted once)."""
    params = dict(model.named_parameters())
    return int(sum(params[n].numel() for n in set(names)))
