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

Weight sync (``get_per_tensor_param``, what verl's checkpoint engine sends to the rollout servers):
the first export of a worker is verl's, every tensor; later ones, when the selection says
``sync="trainable"``, carry only the trainable tensors, gathered and sent, since nothing else has
changed on the servers (``config.resolve_weight_sync`` allows it only where the servers keep their
weights between syncs). A model whose exported names do not cover the trainable ones (a fused MoE
export) and LoRA/QAT exports fall back to the full export.
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
        sync: ``all`` (every weight sync exports every tensor) or ``trainable`` (after a worker's
            first export, only the trainable tensors).
    """

    layers: Any = "all"
    modules: str = "all"
    train_embeddings: bool = False
    train_lm_head: bool = False
    lr_multipliers: dict[int, float] = field(default_factory=dict)
    sync: str = "all"

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

    def forward_backward_batch(self, data, loss_function, forward_only=False):
        """verl's, with ``global_batch_size`` (what the ``seq-mean-*`` losses divide by) set to the
        mini-batch's rows that have a response token over all ranks, as verl's ``batch_num_tokens``
        counts only response tokens: lamina's filler rows (response mask 0) then change no loss."""
        if not forward_only and "loss_mask" in data.keys():
            from verl.utils import tensordict_utils as tu

            tu.assign_non_tensor(data, global_batch_size=self._rows_with_loss(data["loss_mask"]))
        return super().forward_backward_batch(data, loss_function, forward_only=forward_only)

    def _rows_with_loss(self, mask: torch.Tensor) -> int:
        """Rows with at least one loss token, summed over the data-parallel ranks."""
        rows = mask.unbind() if mask.is_nested else mask
        count = torch.tensor([sum(int(row.sum() > 0) for row in rows)], dtype=torch.int64)
        if torch.distributed.is_initialized():
            from verl.utils.device import get_device_id

            count = count.to(get_device_id())
            torch.distributed.all_reduce(count, group=self.get_data_parallel_group())
        return int(count.item())

    def train_batch(self, data, loss_function):
        outputs = super().train_batch(data, loss_function)
        if self._selection() is not None and self.is_mp_src_rank_with_outputs():
            outputs["metrics"][TRAINABLE_METRIC] = [
                float(len(self.lamina_trainable))
            ]  # as per-micro-batch lists
        return outputs

    def get_per_tensor_param(self, layered_summon=False, base_sync_done=False, **kwargs):
        """verl's export of the full weights on the first call; then, with ``sync="trainable"``,
        only the trainable tensors (each gathered on every rank, as verl's export does)."""
        selection = self._selection()
        first = not getattr(self, "lamina_exported", False)
        self.lamina_exported = True
        params = (
            None if first or selection is None or selection.sync != "trainable" else self._trainable_state()
        )
        if params is None:
            return super().get_per_tensor_param(
                layered_summon=layered_summon, base_sync_done=base_sync_done, **kwargs
            )
        from torch.distributed.tensor import DTensor
        from verl.utils.device import get_device_id
        from verl.workers.engine.fsdp.utils import unfuse_moe_params

        device = get_device_id()

        def gathered(tensor: Any) -> torch.Tensor:
            if not isinstance(tensor, DTensor):
                return tensor
            moved: Any = tensor.to(device, non_blocking=True)  # still a DTensor
            return moved.full_tensor()

        weights = ((name, gathered(p)) for name, p in params.items())
        return unfuse_moe_params(weights, self.model_config.hf_config.model_type), None

    def _trainable_state(self) -> dict[str, Any] | None:
        """The trainable entries of the state dict, under the names verl exports; None where a
        partial export cannot be trusted (FSDP1, LoRA, QAT, a name the export does not have)."""
        from verl.utils.fsdp_utils import fsdp_version
        from verl.utils.model import convert_weight_keys

        inner = getattr(self.module, "_fsdp_wrapped_module", self.module)
        if (
            fsdp_version(self.module) != 2
            or hasattr(inner, "peft_config")
            or getattr(self, "_qat_enabled", False)
        ):
            return None
        placeholder = torch.empty(0)  # the conversion renames keys only
        names = set(convert_weight_keys(dict.fromkeys(self.lamina_trainable, placeholder), inner))
        state = convert_weight_keys(self.module.state_dict(), inner)
        if not names <= set(state):
            log.warning("lamina: the trainable tensors are not all in the export; syncing every tensor")
            return None
        return {name: tensor for name, tensor in state.items() if name in names}

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
