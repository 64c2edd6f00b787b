"""Layer selection: which transformer blocks (and which of their modules) an update may touch.

``layers`` accepts block indices (``[14]``, ``[10, 11, 12]``), ranges (``"10-14"``), ``"middle:K"``
(the K blocks centred at depth/2), ``"top:K@<sweep dir>"`` (the K best blocks of a finished sweep),
``"all"`` and ``"none"``. ``modules`` narrows to ``attn``, ``mlp``, ``norm`` or a regex over the
parameter names inside a block. Embeddings and the LM head stay frozen unless asked for.
``"lora:R@<any of the above>"`` (``"lora:R"``: every block) trains rank-R LoRA adapters on those
blocks' linear layers instead of the blocks themselves (``lamina.trainer.lora``).

Freezing is plain ``requires_grad=False``: with nothing below the lowest trainable block needing a
gradient, autograd never builds a graph there, so no gradient is computed below it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

import torch
from torch import nn

MODULE_PATTERNS = {
    "all": r".*",
    "attn": r"(^|\.)(self_attn|attn|attention|self_attention)\.",
    "mlp": r"(^|\.)(mlp|feed_forward|ffn)\.",
    "norm": r"(^|\.)[a-z_]*(norm|ln)[a-z_0-9]*\.",
}


class _WithEmbeddings(Protocol):
    """What a transformers model (``PreTrainedModel``) has beyond ``nn.Module``."""

    def get_input_embeddings(self) -> nn.Module | None: ...

    def get_output_embeddings(self) -> nn.Module | None: ...


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Finds the decoder's block list without hard-coded names.

    The block list is the ``nn.ModuleList`` of identical module types with the most entries
    (``model.layers`` for Llama/Qwen/Mistral/Gemma, ``transformer.h`` for GPT-2).
    """
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise ValueError(f"no transformer block list found in {type(model).__name__}")
    return best


def _top_blocks_of_sweep(k: int, sweep_dir: str, num_blocks: int) -> list[int]:
    table = Path(sweep_dir) / "contribution.csv"
    if not table.exists():
        raise ValueError(f"layers='top:{k}@{sweep_dir}': {table} does not exist (run `lamina sweep` first)")
    with table.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("block", "").isdigit()]
    if not 1 <= k <= len(rows):
        raise ValueError(f"layers='top:{k}@{sweep_dir}': K must be in 1..{len(rows)} (blocks in {table})")
    # C(k) is empty when the sweep's S_full ~ S_base; S(k) then ranks the blocks as C would.
    rows.sort(key=lambda r: float(r.get("contribution") or r.get("score") or "-inf"), reverse=True)
    return sorted(int(r["block"]) for r in rows[:k])


LORA_SPEC = re.compile(r"lora:(\d+)(?:@(.*))?")
LORA_FORMS = "'lora:R' (every block), 'lora:R@<blocks>' (e.g. 'lora:1@all', 'lora:8@14', 'lora:4@middle:3')"
# "top:K@<sweep dir>": K, and the sweep folder whose contribution.csv ranks the blocks.
TOP_SPEC = re.compile(r"top:(\d+)@(.+)")
VALID_FORMS = f"[i, j, ...], 'a-b', 'middle:K', 'top:K@<sweep dir>', 'all', 'none', {LORA_FORMS}"


def split_lora(spec: object) -> tuple[int | None, object]:
    """``(R, the block spec)`` of ``lora:R@SEL`` (``lora:R`` alone: SEL is ``all``), or ``(None, spec)``
    for a spec without LoRA.

    Raises:
        ValueError: a ``lora:`` spec whose rank is not an integer >= 1 or whose SEL is empty or LoRA.
    """
    if not isinstance(spec, str) or not spec.strip().startswith("lora:"):
        return None, spec
    m = LORA_SPEC.fullmatch(spec.strip())
    inner = (m.group(2) if m and m.group(2) is not None else "all").strip()
    if m is None or int(m.group(1)) < 1 or not inner or inner.startswith("lora:"):
        raise ValueError(f"layers={spec!r} is not a LoRA spec; valid forms: {LORA_FORMS}, R >= 1")
    return int(m.group(1)), inner


def parse_layers(spec: object, num_blocks: int) -> list[int]:
    """Turns a ``layers`` spec into sorted block indices (for ``lora:R@SEL``: SEL's blocks).

    Raises:
        ValueError: naming the bad value, the valid forms and L (``num_blocks``).
    """
    rank, inner = split_lora(spec)
    if rank is not None:
        try:
            return parse_layers(inner, num_blocks)
        except ValueError as err:  # name the whole spec the user wrote
            raise ValueError(str(err).replace(f"layers={inner!r}", f"layers={spec!r}", 1)) from None
    valid_forms = VALID_FORMS
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return list(range(num_blocks))
        if text == "none":
            return []
        if m := re.fullmatch(r"middle:(\d+)", text):
            k = int(m.group(1))
            if not 1 <= k <= num_blocks:
                raise ValueError(
                    f"layers={spec!r}: K must be in 1..{num_blocks} (the model has L={num_blocks})"
                )
            start = num_blocks // 2 - k // 2
            return list(range(start, start + k))
        if m := TOP_SPEC.fullmatch(text):
            blocks = _top_blocks_of_sweep(int(m.group(1)), m.group(2), num_blocks)
        elif m := re.fullmatch(r"(-?\d+)\s*-\s*(-?\d+)", text):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ValueError(f"layers={spec!r}: empty range; write 'low-high' with low <= high")
            blocks = list(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", text):
            blocks = [int(text)]
        elif re.fullmatch(r"\[\s*(-?\d+\s*(,\s*-?\d+\s*)*)?\]", text):  # "[10, 11]" as text
            blocks = [int(b) for b in text[1:-1].split(",") if b.strip()]
        else:
            raise ValueError(f"layers={spec!r} is not a layer spec; valid forms: {valid_forms}")
    elif isinstance(spec, int) and not isinstance(spec, bool):
        blocks = [spec]
    elif isinstance(spec, Sequence) and all(isinstance(b, int) and not isinstance(b, bool) for b in spec):
        blocks = list(spec)
    else:
        raise ValueError(f"layers={spec!r} is not a layer spec; valid forms: {valid_forms}")
    bad = [b for b in blocks if not 0 <= b < num_blocks]
    if bad:
        raise ValueError(
            f"layers={spec!r}: block {bad[0]} is outside 0..{num_blocks - 1} "
            f"(the model has L={num_blocks} blocks)"
        )
    return sorted(set(blocks))


def trainable_parameter_names(
    model: nn.Module,
    blocks: Sequence[int],
    modules: str = "all",
    train_embeddings: bool = False,
    train_lm_head: bool = False,
) -> list[str]:
    """Names of the parameters an update may touch, in ``model.named_parameters()`` order."""
    prefix, block_list = find_blocks(model)
    pattern = re.compile(MODULE_PATTERNS.get(modules, modules))
    block_prefixes = {f"{prefix}.{b}.": b for b in blocks}
    input_emb = cast(_WithEmbeddings, model).get_input_embeddings()
    output_emb = cast(_WithEmbeddings, model).get_output_embeddings()
    emb_ids = {id(p) for p in input_emb.parameters()} if input_emb is not None else set()
    head_ids = {id(p) for p in output_emb.parameters()} if output_emb is not None else set()
    if emb_ids & head_ids and train_embeddings != train_lm_head:
        raise ValueError(
            f"trainer.train_embeddings={train_embeddings} but trainer.train_lm_head={train_lm_head}: this "
            "model ties its LM head to the input embeddings (one tensor), so both train or neither; "
            "set both to the same value"
        )
    names = []
    for name, param in model.named_parameters():  # tied weights appear once
        if id(param) in emb_ids or id(param) in head_ids:
            if (train_embeddings and id(param) in emb_ids) or (train_lm_head and id(param) in head_ids):
                names.append(name)
            continue
        for block_prefix in block_prefixes:
            if name.startswith(block_prefix) and pattern.search(name[len(block_prefix) - 1 :]):
                names.append(name)
                break
    return names


def apply_layer_selection(model: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    """Freezes every parameter not in ``names``; returns the trainable ones, in order."""
    wanted = set(names)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in wanted)
        if name in wanted:
            trainable.append(param)
    return trainable


def block_of(name: str, block_prefix: str) -> int | None:
    """The block index a parameter name belongs to, or None outside the block list."""
    if not name.startswith(block_prefix + "."):
        return None
    return int(name[len(block_prefix) + 1 :].split(".", 1)[0])


def param_groups(
    model: nn.Module, names: Sequence[str], lr: float, lr_multipliers: dict[int, float] | None = None
) -> list[dict]:
    """AdamW parameter groups: one per distinct learning rate (per-block multipliers)."""
    prefix, block_list = find_blocks(model)
    multipliers = {int(k): float(v) for k, v in (lr_multipliers or {}).items()}
    bad = [k for k in multipliers if not 0 <= k < len(block_list)]
    if bad:
        raise ValueError(f"lr_multipliers: block {bad[0]} is outside 0..{len(block_list) - 1}")
    params = dict(model.named_parameters())
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name in names:
        block = block_of(name, prefix)
        scale = multipliers.get(block, 1.0) if block is not None else 1.0
        groups.setdefault(lr * scale, []).append(params[name])
    return [{"params": ps, "lr": group_lr} for group_lr, ps in groups.items()]


class ReferenceWeights:
    """The reference policy for KL without a second model: the trainable tensors' initial values.

    ``with ref.swapped_in():`` the model computes with the initial weights of the trainable
    blocks; every frozen tensor is shared, so only the trainable blocks are copied.
    """

    def __init__(self, params: Sequence[nn.Parameter]):
        self.params = list(params)
        self.initial = [p.detach().clone() for p in self.params]

    def swapped_in(self):
        return _Swap(self)


class _Swap:
    def __init__(self, ref: ReferenceWeights):
        self.ref = ref
        self.saved: list[torch.Tensor] = []

    def __enter__(self):
        self.saved = [p.data for p in self.ref.params]
        for p, init in zip(self.ref.params, self.ref.initial, strict=True):
            p.data = init
        return self

    def __exit__(self, *exc):
        for p, saved in zip(self.ref.params, self.saved, strict=True):
            p.data = saved
        return False
