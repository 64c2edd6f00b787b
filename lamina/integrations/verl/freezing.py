"""Layer selection inside verl's FSDP actor: freeze before wrapping, optimise trainable tensors only.

verl 0.9 has no freezing option (its open PR #6320 proposes ``freeze_module_pattern``). lamina
adds one without touching verl's source: ``LayerSelectingFSDPEngine`` is verl's own
``FSDPEngineWithLMHead`` with two steps extended,

- ``_build_module``: after verl loads the HF model and before it is wrapped with FSDP, every
  parameter outside the selection gets ``requires_grad=False``;
- ``_build_optimizer``: the optimizer receives only the parameters that still require a gradient
  (one group per learning rate when blocks have multipliers), instead of ``module.parameters()``.

How lamina's grammar maps (``lamina.trainer.layers`` does the work; nothing is re-implemented):
``layers`` (``[14]``, ``10-14``, ``middle:K``, ``top:K@<sweep>``, ``all``, ``none``) picks block
indices of the block list ``find_blocks`` finds (``model.layers`` for Llama/Qwen); ``modules``
(``attn``, ``mlp``, ``norm`` or a regex) narrows to parameters inside those blocks;
``train_embeddings``/``train_lm_head`` add the embeddings/LM head. The parameter names are the HF
module's names (``model.layers.14.mlp.up_proj.weight``), which FSDP2 keeps, so the names that
freeze before wrapping are the names the optimizer groups after wrapping.

The selection travels to every Ray worker in the environment variable ``LAMINA_VERL_LAYERS``
(JSON), set in the Ray runtime environment by ``lamina.integrations.verl.config``. The engine is
registered in verl's ``EngineRegistry`` under the vendor key ``lamina``, so verl uses it only when
``VERL_ENGINE_VENDOR=lamina`` is set too (also done by the composed config): a verl run of someone
else on the same machine keeps verl's own engine. The reference model (``forward_only``) is
never frozen or given an optimizer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from verl.workers.engine import EngineRegistry, FSDPEngineWithLMHead

from lamina.trainer.layers import (
    apply_layer_selection,
    find_blocks,
    param_groups,
    parse_layers,
    trainable_parameter_names,
)

log = logging.getLogger(__name__)

ENV_VAR = "LAMINA_VERL_LAYERS"
ENGINE_VENDOR = "lamina"
# A metric every layer-selecting update reports (verl prefixes it ``actor/``): the driver stops the
# run when it is missing, i.e. when a worker fell back to verl's own engine and trained every block.
TRAINABLE_METRIC = "lamina_trainable_tensors"
# verl's FSDP engine is registered for these devices; lamina's mirrors them.
ENGINE_DEVICES = ["cuda", "npu"]


@dataclass
class LayerSelection:
    """lamina's layer selection as the verl workers receive it.

    Args:
        layers: a layer spec (see ``lamina.trainer.layers.parse_layers``).
        modules: ``all``, ``attn``, ``mlp``, ``norm`` or a regex over names inside a block.
        train_embeddings, train_lm_head: also train these (frozen by default).
        lr_multipliers: block index -> learning-rate multiplier.
    """

    layers: Any = "all"
    modules: str = "all"
    train_embeddings: bool = False
    train_lm_head: bool = False
    lr_multipliers: dict[int, float] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> LayerSelection | None:
        """The selection in ``LAMINA_VERL_LAYERS``, or None when unset (verl's behaviour, all train)."""
        text = (environ if environ is not None else os.environ).get(ENV_VAR)
        if not text:
            return None
        data = json.loads(text)
        data["lr_multipliers"] = {int(k): float(v) for k, v in data.get("lr_multipliers", {}).items()}
        return cls(**data)


def freeze_module(module: nn.Module, selection: LayerSelection) -> list[str]:
    """Freezes every parameter of ``module`` outside the selection; returns the trainable names.

    Raises:
        ValueError: a bad layer spec (naming L) or an impossible embeddings/LM-head choice.
    """
    _, blocks = find_blocks(module)
    indices = parse_layers(selection.layers, len(blocks))
    names = trainable_parameter_names(
        module, indices, selection.modules, selection.train_embeddings, selection.train_lm_head
    )
    apply_layer_selection(module, names)
    return names


def trainable_groups(module: nn.Module, lr: float, selection: LayerSelection) -> list[dict]:
    """Optimizer parameter groups over the parameters that require a gradient (any order of names)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError(
            f"layers={selection.layers!r} modules={selection.modules!r} leaves no trainable parameter; "
            "an actor update needs at least one (use layers=all or a block index)"
        )
    return param_groups(module, names, lr, selection.lr_multipliers)


@EngineRegistry.register(
    model_type="language_model", backend=["fsdp", "fsdp2"], device=ENGINE_DEVICES, vendor=ENGINE_VENDOR
)
class LayerSelectingFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP engine with lamina's layer selection (see the module docstring).

    Without ``LAMINA_VERL_LAYERS`` it behaves exactly as ``FSDPEngineWithLMHead``.
    """

    def _selection(self) -> LayerSelection | None:
        if self.engine_config.forward_only:  # the reference model: no update, nothing to freeze
            return None
        return LayerSelection.from_env()

    def _build_module(self):
        module = super()._build_module()
        selection = self._selection()
        if selection is not None:
            self.lamina_trainable = freeze_module(module, selection)
            if self.rank == 0:
                count = sum(p.numel() for p in module.parameters() if p.requires_grad)
                log.warning(
                    "lamina layer selection %s/%s: %d trainable tensors, %d parameters",
                    selection.layers,
                    selection.modules,
                    len(self.lamina_trainable),
                    count,
                )
        return module

    def train_batch(self, data, loss_function):
        outputs = super().train_batch(data, loss_function)
        if self._selection() is not None and self.is_mp_src_rank_with_outputs():
            outputs["metrics"][TRAINABLE_METRIC] = [
                float(len(self.lamina_trainable))
            ]  # as per-micro-batch lists
        return outputs

    def _build_optimizer(self, module):
        selection = self._selection()
        if selection is None:
            return super()._build_optimizer(module)
        from verl.workers.config.optimizer import build_optimizer

        groups = trainable_groups(module, self.optimizer_config.lr, selection)
        return build_optimizer(groups, self.optimizer_config)


def optimizer_parameter_count(optimizer: torch.optim.Optimizer) -> int:
    """How many tensors the optimizer holds (over all groups)."""
    return sum(len(group["params"]) for group in optimizer.param_groups)
