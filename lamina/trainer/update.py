"""One policy update over a rollout batch: the policy's log-probs, the verl loss, AdamW on trainable blocks.

What a row's log-probs are is the policy's business (``Policy.log_probs``): the response tokens in
generate mode, the chosen action's log pi(a|s) over all candidates in choose mode. The update treats
both as (B, L) tensors with a mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import cast

import numpy as np
import torch

from lamina.agents.choose import state_key
from lamina.agents.logprobs import PackedRows, pack_rows, response_log_probs  # noqa: F401  (re-exported)
from lamina.agents.prefix import PrefixStore
from lamina.algorithms.losses import (
    LossConfig,
    engine_gap,
    policy_loss,
    truncated_is_weights,
    verl_actor_config,
)
from lamina.trainer.config import UpdateConfig
from lamina.trainer.layers import ReferenceWeights
from lamina.trainer.rollout import Policy, RolloutBatch


def _pad_right(tensors: Sequence[torch.Tensor], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(tensors), width), dtype=torch.float32)
    for i, t in enumerate(tensors):
        out[i, : len(t)] = t
    return out.to(device)


def _row_log_probs(
    policy: Policy,
    batch: RolloutBatch,
    rows: Sequence[int],
    temperature: float,
    entropy=False,
    prefix: PrefixStore | None = None,
):
    return policy.log_probs(
        [batch.prompt_ids[i] for i in rows],
        [batch.response_ids[i] for i in rows],
        temperature,
        candidates=[batch.candidates[i] for i in rows] if batch.candidates is not None else None,
        chosen=[int(batch.chosen[i]) for i in rows] if batch.chosen is not None else None,
        with_entropy=entropy,
        prefix=prefix,
    )


def micro_batches(
    batch: RolloutBatch, rows: Sequence[int], size: int, by_state: bool = True
) -> list[list[int]]:
    """``rows`` in micro-batches of at most ``size`` distinct states. In choose mode the rows of one
    state (a group's copies at a shared anchor, whatever each chose) are kept together, so the
    policy scores that state once; in generate mode (or ``by_state=False``) every row is its own."""
    if batch.candidates is None or not by_state:
        groups = [[i] for i in rows]
    else:
        states: dict[Hashable, list[int]] = {}
        for i in rows:
            key = state_key(batch.prompt_ids[i].tolist(), batch.candidates[i])
            states.setdefault(key, []).append(i)
        groups = list(states.values())
    return [sum(groups[s : s + size], []) for s in range(0, len(groups), size)]


def _shares(policy: Policy) -> bool:
    return getattr(policy, "share_states", False)


@torch.no_grad()
def reference_log_probs(
    policy: Policy,
    reference: ReferenceWeights,
    batch: RolloutBatch,
    temperature: float,
    micro_batch_size: int,
    prefix: PrefixStore | None = None,
) -> list[torch.Tensor]:
    """Per-row (L_i,) log-probs under the reference weights, computed once per batch (the reference
    does not change across PPO epochs and mini-batches)."""
    with reference.swapped_in():
        return current_log_probs(policy, batch, temperature, micro_batch_size, prefix)


@torch.no_grad()
def current_log_probs(
    policy: Policy,
    batch: RolloutBatch,
    temperature: float,
    micro_batch_size: int,
    prefix: PrefixStore | None = None,
) -> list[torch.Tensor]:
    """Per-row (L_i,) log-probs under the model's weights now (no gradient)."""
    out: list[torch.Tensor | None] = [None] * len(batch)
    for chunk in micro_batches(batch, range(len(batch)), micro_batch_size, _shares(policy)):
        log_probs, _, _ = _row_log_probs(policy, batch, chunk, temperature, prefix=prefix)
        for j, i in enumerate(chunk):
            out[i] = log_probs[j, : len(batch.old_log_probs[i])].float().cpu()
    return cast("list[torch.Tensor]", out)  # every row filled: the micro-batches cover them all


def ppo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    trainable: Sequence[torch.nn.Parameter],
    batch: RolloutBatch,
    row_advantages: np.ndarray,
    loss_cfg: LossConfig,
    update_cfg: UpdateConfig,
    loss_scale_factor: int,
    temperature: float,
    reference: ReferenceWeights | None = None,
    generator: torch.Generator | None = None,
    on_micro_batch: Callable[[int, int], None] | None = None,
    prefix: PrefixStore | None = None,
    on_gradients: Callable[[], None] | None = None,
    engine_log_probs: bool = False,
    tis_cap: float | None = None,
) -> dict[str, float]:
    """PPO epochs over mini-batches of rows; each row's scalar advantage goes to all its units.

    The forward runs in eval mode (no dropout), so the first on-policy step is at ratio 1.
    An optimizer step whose loss or gradient is not finite is skipped (weights and optimizer state
    untouched) and counted in ``skipped_steps``.

    Args:
        loss_scale_factor: the constant of ``seq-mean-token-sum-norm`` (the max response length).
        temperature: the sampling temperature the old log-probs were recorded at (> 0).
        on_micro_batch: called as ``(done, total)`` after every forward/backward.
        prefix: the states entering the lowest trainable block (``lamina.agents.prefix``): every
            forward, the reference's included, starts there.
        on_gradients: called before each gradient-norm clip and optimizer step, with the step's
            summed gradients in ``.grad`` (``lamina.trainer.telemetry``).
        engine_log_probs: the batch's old log-probs come from another engine (vLLM) than this
            model's forward: the PPO ratio then uses the trainer's own log-probs before the update,
            and the engine/trainer gap is reported (``engine_logp_abs_diff``, ``engine_kl``).
        tis_cap: with ``engine_log_probs``, weight each token's policy-gradient term by
            min(pi_trainer / pi_engine, tis_cap) (truncated importance sampling); None: no weight.
    Returns:
        averaged metrics: ``loss``, ``pg_loss``, ``pg_clipfrac``, ``ppo_kl``, ``kl``, ``grad_norm``,
        and ``skipped_steps`` / ``optimizer_steps`` (sums).
    """
    model = policy.model
    model.eval()
    device = next(model.parameters()).device
    n = len(batch)
    mini = update_cfg.mini_batch_size or n
    totals: dict[str, list[float]] = {}
    skipped = steps = 0
    ref_rows = None
    if reference is not None and loss_cfg.kl_coef > 0:
        ref_rows = reference_log_probs(
            policy, reference, batch, temperature, update_cfg.micro_batch_size, prefix
        )
    trainer_rows = None
    # One optimizer step per batch: the forward before it is the trainer's pre-update log-probs.
    if engine_log_probs and (update_cfg.ppo_epochs > 1 or mini < n):
        trainer_rows = current_log_probs(policy, batch, temperature, update_cfg.micro_batch_size, prefix)
    epochs = []
    for _ in range(update_cfg.ppo_epochs):
        order = (
            torch.randperm(n, generator=generator).tolist()
            if update_cfg.ppo_epochs > 1 or mini < n
            else list(range(n))
        )
        epochs.append([order[s : s + mini] for s in range(0, n, mini)])
    size, by_state = update_cfg.micro_batch_size, _shares(policy)
    micro_total = sum(len(micro_batches(batch, idx, size, by_state)) for minis in epochs for idx in minis)
    micro_done = 0
    for minis in epochs:
        for idx in minis:
            num_units = sum(len(batch.old_log_probs[i]) for i in idx)
            actor = verl_actor_config(loss_cfg, num_units, len(idx), loss_scale_factor)
            optimizer.zero_grad(set_to_none=True)
            step_metrics: dict[str, float] = {}
            for micro in micro_batches(batch, idx, size, by_state):
                log_probs, mask, entropy = _row_log_probs(
                    policy, batch, micro, temperature, loss_cfg.entropy_coef > 0, prefix
                )
                width = log_probs.shape[1]
                old = _pad_right([batch.old_log_probs[i] for i in micro], width, device)
                adv = torch.as_tensor(row_advantages[micro], dtype=torch.float32, device=device)
                ref = (
                    _pad_right([ref_rows[i] for i in micro], width, device) if ref_rows is not None else None
                )
                gap, is_weights = {}, None
                if engine_log_probs:
                    engine = old
                    old = (
                        _pad_right([trainer_rows[i] for i in micro], width, device)
                        if trainer_rows is not None
                        else log_probs.detach().float()
                    )
                    gap = engine_gap(old, engine, mask)
                    if tis_cap is not None:
                        is_weights = truncated_is_weights(old, engine, tis_cap)
                        gap["tis_weight_mean"] = float((is_weights * mask).sum() / mask.sum().clamp(min=1))
                loss, metrics = policy_loss(
                    log_probs,
                    old,
                    adv[:, None].expand(-1, width),
                    mask,
                    actor,
                    loss_cfg,
                    ref,
                    entropy,
                    is_weights,
                )
                metrics.update(gap)
                loss.backward()
                micro_done += 1
                if on_micro_batch is not None:
                    on_micro_batch(micro_done, micro_total)
                share = len(micro) / len(idx)
                metrics["loss"] = float(loss.detach())
                for k, v in metrics.items():
                    # Loss terms are already shares of the mini-batch total; ratios are averaged.
                    step_metrics[k] = step_metrics.get(k, 0.0) + (
                        v if k in ("loss", "pg_loss", "kl", "entropy") else v * share
                    )
            if on_gradients is not None:
                on_gradients()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, update_cfg.max_grad_norm))
            if math.isfinite(grad_norm) and math.isfinite(step_metrics["loss"]):
                optimizer.step()
                steps += 1
            else:
                skipped += 1  # a NaN/Inf step would poison the weights and Adam's moments
            optimizer.zero_grad(set_to_none=True)
            step_metrics["grad_norm"] = grad_norm
            for k, v in step_metrics.items():
                totals.setdefault(k, []).append(v)
    result = {k: float(np.mean(v)) for k, v in totals.items()}
    result.update(skipped_steps=float(skipped), optimizer_steps=float(steps))
    return result
