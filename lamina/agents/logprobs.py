"""Token log-probs of a causal LM without a full (B, T, V) fp32 logits copy.

The decoder runs once to its last hidden states; the LM head then runs over chunks of positions,
and each chunk keeps only ``logit[target] - logsumexp(logits)``. Under autograd every chunk is
checkpointed, so backward recomputes its logits instead of keeping them: peak logits memory is one
chunk, not the whole (B, T, V) tensor (5 GB per fp32 copy at a 152k vocabulary and 16 x 512 tokens).

    rows = pack_rows(prompts, responses, pad_id)
    log_probs, entropy = response_log_probs(model, rows, temperature=1.0)   # (B, R) each
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

# Positions per LM-head chunk: 1024 x 49k vocabulary x 4 bytes = 200 MB of fp32 logits at most.
HEAD_CHUNK_TOKENS = 1024


def autocast_context(model: torch.nn.Module):
    """The autocast context a model's forward needs: mixed-precision models (a low-precision body
    with fp32 trainable blocks, see ``lamina.agents.models``) record their compute dtype in
    ``model.lamina_autocast_dtype``; others run as they are."""
    dtype = getattr(model, "lamina_autocast_dtype", None)
    if dtype is None:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type=device_type, dtype=dtype)


def decoder(model: PreTrainedModel) -> torch.nn.Module:
    """The model without its LM head (``model.model`` for Llama, ``model.transformer`` for GPT-2)."""
    return getattr(model, model.base_model_prefix)


def _head_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden).float()  # (N, V)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma 2's head squashes logits; applying it keeps log-probs equal to model(...).logits
        logits = torch.tanh(logits / cap) * cap
    return logits


def _head_log_probs(
    model: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, entropy: bool
) -> torch.Tensor:
    logits = _head_logits(model, hidden) / temperature
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    picked = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not entropy:
        return picked[:, None]
    ent = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return torch.stack([picked, ent], dim=-1)  # (N, 2)


def gather_log_probs(
    model: PreTrainedModel,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = HEAD_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(head(hidden) / T)[target] per position, and the entropy when asked.

    Args:
        hidden: (..., H) last hidden states; targets: (...) token ids, same leading shape.
    Returns:
        log-probs (...) and entropy (...) or None, both float32.
    """
    shape = targets.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    pieces = []
    for start in range(0, flat_targets.shape[0], chunk_tokens):
        h = flat_hidden[start : start + chunk_tokens]
        t = flat_targets[start : start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(
                checkpoint(_head_log_probs, model, h, t, temperature, with_entropy, use_reentrant=False)
            )
        else:
            pieces.append(_head_log_probs(model, h, t, temperature, with_entropy))
    out = torch.cat(pieces) if pieces else flat_hidden.new_zeros((0, 2 if with_entropy else 1)).float()
    log_probs = out[:, 0].reshape(shape)
    return log_probs, (out[:, 1].reshape(shape) if with_entropy else None)


@dataclass
class PackedRows:
    """Rows laid out as [left-padded prompt | right-padded response]; every response starts at P.

    ``input_ids``/``attention_mask``/``position_ids``: (B, P + R); ``response_ids``/``response_mask``: (B, R).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor


def pack_rows(prompts: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], pad_id: int) -> PackedRows:
    p = max(len(x) for x in prompts)
    r = max(len(x) for x in responses)
    b = len(prompts)
    input_ids = torch.full((b, p + r), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, p + r), dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[i, p - len(prompt) : p] = torch.as_tensor(prompt)
        input_ids[i, p : p + len(response)] = torch.as_tensor(response)
        attention_mask[i, p - len(prompt) : p + len(response)] = 1
    # Positions count real tokens only, as generate() does for left-padded prompts.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return PackedRows(
        input_ids, attention_mask, position_ids, input_ids[:, p:], attention_mask[:, p:].float()
    )


def response_log_probs(
    model: PreTrainedModel,
    rows: PackedRows,
    temperature: float = 1.0,
    with_entropy: bool = False,
    inputs_embeds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, R) of the response tokens under ``model`` (logits divided by ``temperature``),
    and the per-token entropy (B, R) when asked, on the model's device. ``inputs_embeds`` (B, P + R,
    H) replaces the token ids as the first running block's input (see ``lamina.agents.prefix``)."""
    r = rows.response_ids.shape[1]
    device = next(model.parameters()).device
    with autocast_context(model):
        hidden = decoder(model)(
            input_ids=rows.input_ids.to(device) if inputs_embeds is None else None,
            inputs_embeds=inputs_embeds,
            attention_mask=rows.attention_mask.to(device),
            position_ids=rows.position_ids.to(device),
            use_cache=False,
        ).last_hidden_state
        # Position P-1+j predicts response token j.
        hidden = hidden[:, -r - 1 : -1]  # (B, R, H)
        return gather_log_probs(model, hidden, rows.response_ids.to(device), temperature, with_entropy)
