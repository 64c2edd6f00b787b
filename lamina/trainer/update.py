"""One policy update over a rollout batch: token log-probs, the verl loss, AdamW on trainable blocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from lamina.algorithms.losses import LossConfig, policy_loss, verl_actor_config
from lamina.trainer.layers import ReferenceWeights


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
        input_ids[i, p - len(prompt) : p] = prompt
        input_ids[i, p : p + len(response)] = response
        attention_mask[i, p - len(prompt) : p + len(response)] = 1
    # Positions count real tokens only, as generate() does for left-padded prompts.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return PackedRows(
        input_ids, attention_mask, position_ids, input_ids[:, p:], attention_mask[:, p:].float()
    )


def response_log_probs(
    model: PreTrainedModel, rows: PackedRows, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (B, R) of the response tokens under ``model`` (logits divided by ``temperature``),
    and the per-token entropy (B, R) when asked. Only the R+1 last positions get LM-head logits."""
    r = rows.response_ids.shape[1]
    device = model.device
    out = model(
        input_ids=rows.input_ids.to(device),
        attention_mask=rows.attention_mask.to(device),
        position_ids=rows.position_ids.to(device),
        logits_to_keep=r + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float() / temperature  # (B, R, V): position P-1+j predicts token j
    log_probs = torch.log_softmax(logits, dim=-1)
    token_log_probs = log_probs.gather(-1, rows.response_ids.to(device).unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        from verl.utils.torch_functional import entropy_from_logits

        entropy = entropy_from_logits(logits)
    return token_log_probs, entropy


def _pad_right(tensors: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros((len(tensors), width), dtype=torch.float32)
    for i, t in enumerate(tensors):
        out[i, : len(t)] = t
    return out


@torch.no_grad()
def reference_log_probs(
    model: PreTrainedModel,
    reference: ReferenceWeights,
    prompt_ids: Sequence[torch.Tensor],
    response_ids: Sequence[torch.Tensor],
    pad_id: int,
    temperature: float,
    micro_batch_size: int,
) -> list[torch.Tensor]:
    """Per-row (R_i,) log-probs under the reference weights, computed once per batch (the reference
    does not change across PPO epochs and mini-batches)."""
    out: list[torch.Tensor] = []
    with reference.swapped_in():
        for start in range(0, len(prompt_ids), micro_batch_size):
            chunk = range(start, min(start + micro_batch_size, len(prompt_ids)))
            rows = pack_rows([prompt_ids[i] for i in chunk], [response_ids[i] for i in chunk], pad_id)
            log_probs, _ = response_log_probs(model, rows, temperature)
            out.extend(log_probs[j, : len(response_ids[i])].cpu() for j, i in enumerate(chunk))
    return out


@dataclass
class UpdateConfig:
    """Optimisation settings (part of the ``trainer`` group)."""

    ppo_epochs: int = 1
    mini_batch_size: int | None = None  # rows per optimizer step; None = the whole batch
    micro_batch_size: int = 8  # rows per forward/backward
    max_grad_norm: float = 1.0


def ppo_update(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    trainable: Sequence[torch.nn.Parameter],
    prompt_ids: Sequence[torch.Tensor],
    response_ids: Sequence[torch.Tensor],
    old_log_probs: Sequence[torch.Tensor],
    row_advantages: np.ndarray,
    loss_cfg: LossConfig,
    update_cfg: UpdateConfig,
    pad_id: int,
    loss_scale_factor: int,
    temperature: float = 1.0,
    reference: ReferenceWeights | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """PPO epochs over mini-batches of rows; each row's scalar advantage goes to all its tokens.

    ``loss_scale_factor`` is the constant of ``seq-mean-token-sum-norm`` (the max response length).
    Returns averaged metrics: ``loss``, ``pg_loss``, ``pg_clipfrac``, ``ppo_kl``, ``kl``, ``grad_norm``...
    """
    n = len(prompt_ids)
    mini = update_cfg.mini_batch_size or n
    totals: dict[str, list[float]] = {}
    ref_rows = None
    if reference is not None and loss_cfg.kl_coef > 0:
        model.eval()
        ref_rows = reference_log_probs(
            model, reference, prompt_ids, response_ids, pad_id, temperature, update_cfg.micro_batch_size
        )
    model.train()
    for _ in range(update_cfg.ppo_epochs):
        order = (
            torch.randperm(n, generator=generator).tolist()
            if update_cfg.ppo_epochs > 1 or mini < n
            else list(range(n))
        )
        for start in range(0, n, mini):
            idx = order[start : start + mini]
            num_tokens = sum(len(response_ids[i]) for i in idx)
            actor = verl_actor_config(loss_cfg, num_tokens, len(idx), loss_scale_factor)
            optimizer.zero_grad(set_to_none=True)
            step_metrics: dict[str, float] = {}
            for m_start in range(0, len(idx), update_cfg.micro_batch_size):
                micro = idx[m_start : m_start + update_cfg.micro_batch_size]
                rows = pack_rows([prompt_ids[i] for i in micro], [response_ids[i] for i in micro], pad_id)
                width = rows.response_ids.shape[1]
                old = _pad_right([old_log_probs[i] for i in micro], width)
                adv = torch.as_tensor(row_advantages[micro], dtype=torch.float32)[:, None].expand(-1, width)
                ref = _pad_right([ref_rows[i] for i in micro], width) if ref_rows is not None else None
                log_probs, entropy = response_log_probs(model, rows, temperature, loss_cfg.entropy_coef > 0)
                loss, metrics = policy_loss(
                    log_probs, old, adv, rows.response_mask, actor, loss_cfg, ref, entropy
                )
                loss.backward()
                share = len(micro) / len(idx)
                metrics["loss"] = float(loss.detach())
                for k, v in metrics.items():
                    # Loss terms are already shares of the mini-batch total; ratios are averaged.
                    step_metrics[k] = step_metrics.get(k, 0.0) + (
                        v if k in ("loss", "pg_loss", "kl", "entropy") else v * share
                    )
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, update_cfg.max_grad_norm)
            optimizer.step()
            step_metrics["grad_norm"] = float(grad_norm)
            for k, v in step_metrics.items():
                totals.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in totals.items()}
