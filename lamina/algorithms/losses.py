"""The policy loss, built from verl's ``core_algos`` (PPO clip, KL estimators, loss aggregation).

verl's functions aggregate one micro-batch at a time; passing the whole mini-batch's token and
sequence counts (``global_batch_info``) makes the sum of micro-batch losses equal the mini-batch
loss, so gradient accumulation is exact.
"""

from __future__ import annotations

from typing import cast

import torch

from lamina.algorithms.config import LossConfig

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum-norm", "seq-mean-token-mean", "seq-mean-token-sum")


def verl_actor_config(cfg: LossConfig, batch_num_tokens: int, global_batch_size: int, scale_factor: int):
    """A verl ``ActorConfig`` carrying the clip settings and the mini-batch counts."""
    from verl.workers.config import ActorConfig

    if cfg.loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode={cfg.loss_agg_mode!r}; valid: {', '.join(LOSS_AGG_MODES)}")
    actor = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=cfg.clip_ratio,
        clip_ratio_low=cfg.clip_ratio,
        clip_ratio_high=cfg.clip_ratio,
        # verl always applies dual clip; a huge bound switches it off.
        clip_ratio_c=cfg.clip_ratio_c if cfg.clip_ratio_c is not None else 1e9,
        loss_agg_mode=cfg.loss_agg_mode,
    )
    actor.global_batch_info.update(
        dp_size=1,
        batch_num_tokens=batch_num_tokens,
        global_batch_size=global_batch_size,
        loss_scale_factor=scale_factor,
    )
    return actor


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    actor_config,
    cfg: LossConfig,
    ref_log_probs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate + KL + entropy bonus for one micro-batch; all tensors (B, R).

    ``is_weights`` (B, R), when given, multiply each token's policy-gradient term (verl's
    ``rollout_is_weights``: the truncated importance weights of ``truncated_is_weights``).

    Returns the micro-batch's share of the mini-batch loss and its metrics.
    """
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty

    info = actor_config.global_batch_info
    pg_loss, pg_metrics = get_policy_loss_fn("vanilla")(
        old_log_prob=old_log_probs,
        log_prob=log_probs,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=cfg.loss_agg_mode,
        config=actor_config,
        rollout_is_weights=is_weights,
    )
    loss = pg_loss
    metrics = {
        "pg_loss": float(pg_loss.detach()),
        "pg_clipfrac": pg_metrics["actor/pg_clipfrac"],
        "ppo_kl": pg_metrics["actor/ppo_kl"],
    }
    if ref_log_probs is not None:
        # verl annotates FloatTensor, the legacy alias of a float32 Tensor; any float Tensor works.
        as_float = cast(torch.FloatTensor, log_probs), cast(torch.FloatTensor, ref_log_probs)
        kl = kl_penalty(*as_float, cfg.kl_type)
        kl_loss = agg_loss(kl, response_mask, cfg.loss_agg_mode, **info)
        loss = loss + cfg.kl_coef * kl_loss
        metrics["kl"] = float(kl_loss.detach())
    if entropy is not None:
        entropy_loss = agg_loss(entropy, response_mask, cfg.loss_agg_mode, **info)
        loss = loss - cfg.entropy_coef * entropy_loss
        metrics["entropy"] = float(entropy_loss.detach())
    return loss, metrics


def truncated_is_weights(
    trainer_log_probs: torch.Tensor, engine_log_probs: torch.Tensor, cap: float
) -> torch.Tensor:
    """Truncated importance sampling (TIS, as verl's token-level ``rollout_is``): the rollout engine
    sampled from pi_engine, the update's ratio is against pi_trainer, so each token's
    policy-gradient term is reweighted by min(pi_trainer / pi_engine, cap), a constant (no gradient).

    Args:
        trainer_log_probs: (B, R) the trainer's log-probs of the sampled tokens before the update.
        engine_log_probs: (B, R) the engine's log-probs of the same tokens.
        cap: the truncation (> 0).
    Returns:
        (B, R) weights in (0, cap].
    """
    if not cap > 0:
        raise ValueError(f"rollout.tis_cap={cap}; valid: a number > 0 (e.g. 2), or null for no correction")
    log_ratio = (trainer_log_probs - engine_log_probs).detach().float()
    return torch.exp(log_ratio.clamp(max=20.0)).clamp(max=cap)  # clamp first: exp never overflows


def engine_gap(
    trainer_log_probs: torch.Tensor, engine_log_probs: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """How far the rollout engine's token log-probs are from the trainer's on the same tokens.

    Args:
        trainer_log_probs: (B, R) the trainer's log-probs of the sampled tokens.
        engine_log_probs: (B, R) the engine's log-probs of the same tokens.
        mask: (B, R) 1 on response tokens.
    Returns:
        ``engine_logp_abs_diff``: mean |logp_trainer - logp_engine| over tokens;
        ``engine_kl``: the k3 estimate of KL(pi_engine || pi_trainer) from the engine's samples,
        mean of r - 1 - log r with r = pi_trainer / pi_engine (>= 0, low variance).
    """
    mask = mask.float()
    tokens = mask.sum().clamp(min=1.0)
    log_ratio = (trainer_log_probs - engine_log_probs).detach().float() * mask
    k3 = torch.exp(log_ratio) - 1.0 - log_ratio  # 0 where masked: log_ratio is 0 there
    return {
        "engine_logp_abs_diff": float(log_ratio.abs().sum() / tokens),
        "engine_kl": float(k3.sum() / tokens),
    }
