"""Frozen-prefix activations: forwards that start at the lowest trainable block.

When only block k and above train, nothing below block k changes during an iteration: the hidden
states entering block k are the same for the rollout's scoring forward, the KL reference's forward
and every PPO epoch. A ``PrefixStore`` keeps them, keyed by the state they encode (the prompt and,
in choose mode, the packed candidates), so the update runs blocks k..L-1 only.

The rollout fills the store for free: scoring runs blocks 0..k-1 and k..L-1 as two calls and keeps
the first call's output (``ChoicePolicy`` while ``capturing``). States the rollout did not see
(generate mode) are computed once per batch without autograd.

Only decoders whose block 0 receives ``inputs_embeds`` unchanged qualify (``PREFIX_MODEL_TYPES``:
no embedding scale as in Gemma, no added position embeddings as in GPT-2); other models run the
whole stack, as before. Padding positions of a stored state are zeros: no real token attends to
them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from transformers import PreTrainedModel

from lamina.agents.logprobs import decoder

# Decoders that feed inputs_embeds to their first block as they are and end with ``norm``.
PREFIX_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def prefix_start(model: PreTrainedModel, trainable_names: Sequence[str]) -> int:
    """The block the update can start at: the lowest trainable block, or 0 when the whole stack
    must run (an embedding or a non-block tensor trains, or the model type does not qualify)."""
    if getattr(model.config, "model_type", None) not in PREFIX_MODEL_TYPES or not trainable_names:
        return 0
    body = decoder(model)
    prefix = f"{model.base_model_prefix}.layers."
    lowest = len(cast(nn.ModuleList, body.layers))
    for name in trainable_names:
        if not name.startswith(prefix):
            return 0  # embeddings, the final norm or the head: they see every position
        lowest = min(lowest, int(name[len(prefix) :].split(".", 1)[0]))
    return lowest


@contextlib.contextmanager
def block_range(model: PreTrainedModel, start: int, stop: int | None = None):
    """Makes the decoder run blocks [start, stop) only; ``stop`` short of the last block also
    skips the final norm, so the output is the hidden state entering block ``stop``.

    Blocks keep their own layer index, so a KV cache built inside holds entries for these blocks
    only and later calls inside the same range can use it."""
    body = decoder(model)
    layers, norm = cast(nn.ModuleList, body.layers), body.norm
    stop = len(layers) if stop is None else stop
    body.layers = nn.ModuleList(list(layers)[start:stop])
    if stop < len(layers):
        body.norm = nn.Identity()
    try:
        yield
    finally:
        body.layers, body.norm = layers, norm


@dataclass
class PrefixStore:
    """Hidden states entering block ``start``, one entry per distinct state of an iteration.

    A choose-mode entry is (prompt states (P, H), packed candidate states (Q, H)); a generate-mode
    entry is ((P + R, H) of prompt and response, None).
    """

    start: int
    states: dict[Hashable, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)

    def clear(self) -> None:
        self.states.clear()


def pad_states(pieces: Sequence[torch.Tensor], width: int, left: bool) -> torch.Tensor:
    """(B, width, H) from B unpadded (n_i, H) tensors, zeros in the padding."""
    first = pieces[0]
    out = first.new_zeros((len(pieces), width, first.shape[-1]))
    for i, piece in enumerate(pieces):
        n = piece.shape[0]
        if left:
            out[i, width - n :] = piece
        else:
            out[i, :n] = piece
    return out
