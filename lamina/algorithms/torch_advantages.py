"""Tensor versions of the group estimators, for batches that live on a device (the verl backend).

Same definitions as ``lamina.algorithms.advantages`` (tests check both agree to 1e-6); row keys
(trajectory, group, anchor) are hashable Python objects, turned into dense integer ids once.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch

from lamina.algorithms.advantages import EPISODE_STATS, EPS, NORMS, dense_ids


def _ids(keys: Sequence[Hashable], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(dense_ids(list(keys)), device=device)


def normalise_within(values: torch.Tensor, cluster: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """(v - mean_c) / (std_c + eps) per cluster (ddof=1); singleton clusters give 0. (N,) -> (N,)"""
    k = int(cluster.max()) + 1 if cluster.numel() else 0
    count = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(
        0, cluster, torch.ones_like(values)
    )
    total = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, cluster, values)
    centred = values - (total / count.clamp(min=1))[cluster]
    out = centred
    if norm == "std":
        sq = torch.zeros(k, dtype=values.dtype, device=values.device).index_add_(0, cluster, centred**2)
        std = (sq / (count - 1).clamp(min=1)).sqrt()
        out = centred / (std[cluster] + eps)
    return torch.where(count[cluster] > 1, out, torch.zeros_like(out))


def discounted_returns(
    rewards: torch.Tensor, traj: torch.Tensor, steps: torch.Tensor, gamma: float
) -> torch.Tensor:
    """R_t = sum_{k>=t} gamma^(k-t) r_k per trajectory (rows in any order; steps need not be dense)."""
    n = rewards.numel()
    order = torch.as_tensor(np.lexsort((steps.cpu().numpy(), traj.cpu().numpy())), device=rewards.device)
    sorted_traj, sorted_steps = traj[order], steps[order]
    # The row after each row in its trajectory, or -1 at the trajectory's end.
    nxt = torch.full((n,), -1, dtype=torch.long, device=rewards.device)
    same = sorted_traj[1:] == sorted_traj[:-1]
    nxt[order[:-1][same]] = order[1:][same]
    gap = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)
    gap[order[:-1][same]] = (sorted_steps[1:] - sorted_steps[:-1])[same].to(rewards.dtype)
    has_next = nxt >= 0
    out = rewards.clone()
    # Each pass extends the sum one row further; the longest trajectory bounds the passes.
    longest = int(torch.bincount(traj).max()) if n else 0
    for _ in range(longest - 1):
        out = rewards + torch.where(has_next, gamma**gap * out[nxt.clamp(min=0)], torch.zeros_like(out))
    return out


def gigpo_advantages(
    rewards: torch.Tensor,
    traj_ids: Sequence[Hashable],
    step_ids: torch.Tensor,
    group_ids: Sequence[Hashable],
    anchors: Sequence[Hashable],
    *,
    gamma: float = 0.95,
    step_weight: float = 1.0,
    norm: str = "std",
    episode_stats: str = "trajectory",
    eps: float = EPS,
) -> torch.Tensor:
    """GiGPO over step rows, A = A_E + w * A_S; ``rewards`` (N,) float tensor, returns (N,)."""
    if norm not in NORMS or episode_stats not in EPISODE_STATS:
        raise ValueError(
            f"norm={norm!r} (valid: {NORMS}), episode_stats={episode_stats!r} (valid: {EPISODE_STATS})"
        )
    device = rewards.device
    episode = grpo_advantages(rewards, traj_ids, group_ids, norm=norm, eps=eps, episode_stats=episode_stats)
    traj = _ids(traj_ids, device)
    step_returns = discounted_returns(rewards, traj, torch.as_tensor(step_ids, device=device), gamma)
    clusters = _ids(list(zip(group_ids, anchors, strict=True)), device)
    return episode + step_weight * normalise_within(step_returns, clusters, norm, eps)


def grpo_advantages(
    rewards: torch.Tensor,
    traj_ids: Sequence[Hashable],
    group_ids: Sequence[Hashable],
    *,
    norm: str = "std",
    eps: float = EPS,
    episode_stats: str = "trajectory",
) -> torch.Tensor:
    """GRPO over step rows: the group-normalised episode return of each row's trajectory. (N,) -> (N,)"""
    device = rewards.device
    traj = _ids(traj_ids, device)
    groups = _ids(group_ids, device)
    n_traj = int(traj.max()) + 1 if traj.numel() else 0
    returns = torch.zeros(n_traj, dtype=rewards.dtype, device=device).index_add_(0, traj, rewards)
    if episode_stats == "steps":
        return normalise_within(returns[traj], groups, norm, eps)
    traj_group = torch.zeros(n_traj, dtype=torch.long, device=device)
    traj_group[traj] = groups
    return normalise_within(returns, traj_group, norm, eps)[traj]
