"""Tensor versions of the group estimators, for batches that live on a device (the verl backend).

Same definitions as ``lamina.algorithms.advantages`` (tests check both agree to 1e-6), including
its two rules: statistics in float64 whatever the input dtype (results are float64), and a group
or anchor cluster whose std is at most ``RTOL`` times its largest absolute-reward sum counts as
having no spread (advantage 0). Row keys (trajectory, group, anchor) are hashable Python objects,
turned into dense integer ids once.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch

from lamina.algorithms.advantages import EPISODE_STATS, EPS, NORMS, RTOL, dense_ids


def _ids(keys: Sequence[Hashable], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(dense_ids(list(keys)), device=device)


def normalise_within(
    values: torch.Tensor,
    cluster: torch.Tensor,
    norm: str,
    eps: float,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """(v - mean_c) / (std_c + eps) per cluster (ddof=1), in float64. (N,) -> (N,) float64

    Singleton clusters give 0, and so does a cluster with std_c <= RTOL * max_c(scale); ``scale``
    is each row's magnitude, |v| when not given. ``norm="none"`` returns v - mean_c, same rules.
    """
    values = values.to(torch.float64)
    magnitude = values.abs() if scale is None else scale.to(torch.float64)
    k = int(cluster.max()) + 1 if cluster.numel() else 0

    def per_cluster(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(k, dtype=torch.float64, device=values.device).index_add_(0, cluster, x)

    count = per_cluster(torch.ones_like(values))
    centred = values - (per_cluster(values) / count.clamp(min=1))[cluster]
    std = (per_cluster(centred**2) / (count - 1).clamp(min=1)).sqrt()
    top = torch.zeros(k, dtype=torch.float64, device=values.device).scatter_reduce_(
        0, cluster, magnitude, reduce="amax"
    )
    spread = (count > 1) & (std > RTOL * top)
    out = centred / (std[cluster] + eps) if norm == "std" else centred
    return torch.where(spread[cluster], out, torch.zeros_like(out))


def discounted_returns(
    rewards: torch.Tensor, traj: torch.Tensor, steps: torch.Tensor, gamma: float
) -> torch.Tensor:
    """R_t = sum_{k>=t} gamma^(k-t) r_k per trajectory, float64 (rows in any order; steps need not
    be dense)."""
    rewards = rewards.to(torch.float64)
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
    episode_stats: str = "steps",
    eps: float = EPS,
) -> torch.Tensor:
    """GiGPO over step rows, A = A_E + w * A_S; ``rewards`` (N,) float tensor, returns (N,) float64."""
    if norm not in NORMS or episode_stats not in EPISODE_STATS:
        raise ValueError(
            f"norm={norm!r} (valid: {NORMS}), episode_stats={episode_stats!r} (valid: {EPISODE_STATS})"
        )
    rewards = rewards.to(torch.float64)
    device = rewards.device
    episode = grpo_advantages(rewards, traj_ids, group_ids, norm=norm, eps=eps, episode_stats=episode_stats)
    traj = _ids(traj_ids, device)
    steps = torch.as_tensor(step_ids, device=device)
    step_returns = discounted_returns(rewards, traj, steps, gamma)
    step_scale = discounted_returns(rewards.abs(), traj, steps, gamma)
    clusters = _ids(list(zip(group_ids, anchors, strict=True)), device)
    return episode + step_weight * normalise_within(step_returns, clusters, norm, eps, step_scale)


def grpo_advantages(
    rewards: torch.Tensor,
    traj_ids: Sequence[Hashable],
    group_ids: Sequence[Hashable],
    *,
    norm: str = "std",
    eps: float = EPS,
    episode_stats: str = "trajectory",
) -> torch.Tensor:
    """GRPO over step rows: the group-normalised episode return of each row's trajectory. (N,) -> (N,)

    ``episode_stats="steps"`` takes mean and std across the group's step rows (GiGPO's default
    A_E); GRPO itself uses ``"trajectory"``. Float64 out.
    """
    rewards = rewards.to(torch.float64)
    device = rewards.device
    traj = _ids(traj_ids, device)
    groups = _ids(group_ids, device)
    n_traj = int(traj.max()) + 1 if traj.numel() else 0

    def per_traj(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_traj, dtype=torch.float64, device=device).index_add_(0, traj, x)

    returns, scale = per_traj(rewards), per_traj(rewards.abs())
    if episode_stats == "steps":
        return normalise_within(returns[traj], groups, norm, eps, scale[traj])
    traj_group = torch.zeros(n_traj, dtype=torch.long, device=device)
    traj_group[traj] = groups
    return normalise_within(returns, traj_group, norm, eps, scale)[traj]
