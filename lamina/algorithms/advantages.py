"""Group-based advantage estimators over step rows (pure numpy).

A row is one step of one trajectory: one prompt, one response. Every estimator sees the same
arrays, each of shape (N,) for N rows, in any order:

- ``rewards``: the step's environment reward, penalties included;
- ``traj_ids``: which trajectory the row belongs to (unique across the batch);
- ``step_ids``: the step index inside its trajectory (0, 1, ...);
- ``group_ids``: the group (task seed) the trajectory belongs to;
- ``anchors``: a hashable key of the environment state the step was taken from.

The episode return R of a trajectory is the undiscounted sum of its rows' rewards. std is the
sample std (ddof=1); a singleton group or anchor cluster contributes 0. Statistics are float64
whatever the input dtype, and a group (or cluster) whose spread is float noise counts as having
none: when std <= RTOL * S, S the largest absolute-reward sum sum_k |r_k| among its members
(discounted alike for step returns), every member gets 0, so returns that are equal in exact
arithmetic give a zero advantage even from float32 rewards. The formulas, and which reference each
one matches, are in docs/algorithms.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from difflib import SequenceMatcher

import numpy as np

EPS = 1e-6
# Float32 rounding moves a return by at most 2**-24 * S (S = sum_k |r_k|); a spread up to RTOL * S
# (about 17x that) is treated as no spread.
RTOL = 1e-6
NORMS = ("std", "none")
# "steps" (the default): GiGPO's episode statistics across the group's step rows, as verl-agent's
# trainer computes them; "trajectory": across the group's trajectories, as the paper's Eq. 3 reads.
EPISODE_STATS = ("steps", "trajectory")

Estimator = Callable[..., np.ndarray]
ESTIMATORS: dict[str, Estimator] = {}
# lamina's estimator name -> the ``algorithm.adv_estimator`` the verl backend gives verl (the one
# table both backends read: lamina.integrations.verl maps back through ``estimator_of_verl_name``).
VERL_NAMES: dict[str, str] = {}


def register_estimator(name: str, verl_name: str | None = None) -> Callable[[Estimator], Estimator]:
    """Registers an estimator under ``name``; a second registration of the name is an error.

    Args:
        name: what ``algorithm.estimator`` names (``configs/algorithm/*.yaml``).
        verl_name: its name in verl's ``algorithm.adv_estimator`` when that differs (verl's
            ``reinforce_plus_plus`` is lamina's ``reinforce_pp``); default ``name``.
    """

    def decorator(fn: Estimator) -> Estimator:
        if name in ESTIMATORS and ESTIMATORS[name] is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ESTIMATORS[name] = fn
        VERL_NAMES[name] = verl_name or name
        return fn

    return decorator


def estimator_of_verl_name(verl_name: str) -> str:
    """The lamina estimator registered under verl's ``algorithm.adv_estimator`` name.

    Raises:
        ValueError: naming the unknown value and the valid ones.
    """
    for name, known in VERL_NAMES.items():  # registration order: "grpo" before its variant "dr_grpo"
        if known == verl_name:
            return name
    raise ValueError(
        f"algorithm.adv_estimator={verl_name!r}; per-step rows support {', '.join(VERL_NAMES.values())}"
    )


def get_estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(sorted(ESTIMATORS))}")
    return ESTIMATORS[name]


# -- helpers --------------------------------------------------------------------------------------
def _check(norm: str, n: int, *arrays: Sequence) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; valid: {', '.join(NORMS)}")
    for a in arrays:
        if len(a) != n:
            raise ValueError(f"all step-row arrays need the same length, got {len(a)} and {n}")


def dense_ids(keys: Sequence[Hashable]) -> np.ndarray:
    """Maps arbitrary hashable keys to 0..K-1 in order of first appearance."""
    index: dict[Hashable, int] = {}
    return np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))


def _normalise_within(
    values: np.ndarray, cluster: np.ndarray, norm: str, eps: float, scale: np.ndarray | None = None
) -> np.ndarray:
    """(v - mean_c) / (std_c + eps) within each cluster c (ddof=1), in float64.

    Singleton clusters give 0, and so does a cluster with std_c <= RTOL * max_c(scale) (no spread
    but rounding noise); ``scale`` is each row's magnitude, |v| when not given. ``norm="none"``
    returns v - mean_c under the same two rules.
    """
    values = np.asarray(values, dtype=np.float64)
    magnitude = np.abs(values) if scale is None else np.asarray(scale, dtype=np.float64)
    k = int(cluster.max()) + 1 if len(cluster) else 0
    count = np.bincount(cluster, minlength=k).astype(np.float64)
    mean = np.bincount(cluster, weights=values, minlength=k) / np.maximum(count, 1)
    centred = values - mean[cluster]
    std = np.sqrt(np.bincount(cluster, weights=centred**2, minlength=k) / np.maximum(count - 1, 1))
    top = np.zeros(k)
    np.maximum.at(top, cluster, magnitude)
    spread = (count > 1) & (std > RTOL * top)
    out = centred / (std[cluster] + eps) if norm == "std" else centred
    return np.where(spread[cluster], out, 0.0)


def episode_returns(rewards: np.ndarray, traj_ids: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(traj_index per row, return per trajectory)``; R = sum of the trajectory's rewards."""
    traj = dense_ids(traj_ids)
    returns = np.bincount(traj, weights=np.asarray(rewards, dtype=np.float64))
    return traj, returns


def trajectory_groups(
    rewards: np.ndarray, traj_ids: Sequence[Hashable], group_ids: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(traj index per row (N,), return per trajectory (T,), group index per trajectory (T,),
    sum of |reward| per trajectory (T,))``; the last is the return's scale for RTOL."""
    values = np.asarray(rewards, dtype=np.float64)
    traj, returns = episode_returns(values, traj_ids)
    scale = np.bincount(traj, weights=np.abs(values), minlength=len(returns))
    traj_group = np.zeros(len(returns), dtype=np.int64)
    traj_group[traj] = dense_ids(group_ids)
    return traj, returns, traj_group, scale


def discounted_returns(
    rewards: np.ndarray, traj_ids: Sequence[Hashable], step_ids: Sequence[int], gamma: float
) -> np.ndarray:
    """R_t = sum_{k>=t} gamma^(k-t) r_k within each trajectory, for rows in any order."""
    values = np.asarray(rewards, dtype=np.float64)
    steps = np.asarray(step_ids)
    traj = dense_ids(traj_ids)
    order = np.lexsort((steps, traj))  # by trajectory, then step
    out = np.empty_like(values)
    running, previous, later_step = 0.0, -1, 0
    for row in order[::-1]:
        if traj[row] != previous:
            running, previous, later_step = 0.0, traj[row], steps[row]
        running = values[row] + gamma ** (later_step - steps[row]) * running
        later_step = steps[row]
        out[row] = running
    return out


def _episode_advantage(
    rewards: np.ndarray,
    traj_ids: Sequence[Hashable],
    group_ids: Sequence[Hashable],
    norm: str,
    episode_stats: str,
    eps: float,
) -> np.ndarray:
    if episode_stats not in EPISODE_STATS:
        raise ValueError(f"episode_stats={episode_stats!r}; valid: {', '.join(EPISODE_STATS)}")
    traj, returns, traj_group, scale = trajectory_groups(rewards, traj_ids, group_ids)
    if episode_stats == "steps":  # one value per step row, as verl-agent's trainer
        return _normalise_within(returns[traj], traj_group[traj], norm, eps, scale[traj])
    return _normalise_within(returns, traj_group, norm, eps, scale)[traj]


# -- estimators -----------------------------------------------------------------------------------
def compute_grpo_advantages(
    rewards: Sequence[float],
    traj_ids: Sequence[Hashable],
    group_ids: Sequence[Hashable],
    *,
    norm: str = "std",
    eps: float = EPS,
) -> np.ndarray:
    """GRPO: A_i = (R_i - mean_G R) / (std_G R + eps) per trajectory, given to all its rows.

    ``norm="none"`` drops the division (Dr. GRPO). Returns shape (N,).
    """
    values = np.asarray(rewards, dtype=np.float64)
    _check(norm, len(values), traj_ids, group_ids)
    return _episode_advantage(values, traj_ids, group_ids, norm, "trajectory", eps)


def compute_gigpo_advantages(
    rewards: Sequence[float],
    traj_ids: Sequence[Hashable],
    step_ids: Sequence[int],
    group_ids: Sequence[Hashable],
    anchors: Sequence[Hashable],
    *,
    gamma: float = 0.95,
    step_weight: float = 1.0,
    norm: str = "std",
    episode_stats: str = "steps",
    eps: float = EPS,
) -> np.ndarray:
    """GiGPO: A = A_E + w * A_S.

    A_E normalises each row's episode return R within its group: with ``episode_stats="steps"``
    (default, verl-agent's trainer) mean and std run over the group's step rows, each trajectory
    counted once per step; with ``"trajectory"`` (the paper's Eq. 3) over its trajectories. A_S
    normalises each row's discounted return R_t over the rows of its group that share its anchor
    state. Returns shape (N,).
    """
    values = np.asarray(rewards, dtype=np.float64)
    _check(norm, len(values), traj_ids, step_ids, group_ids, anchors)
    episode = _episode_advantage(values, traj_ids, group_ids, norm, episode_stats, eps)
    step_returns = discounted_returns(values, traj_ids, step_ids, gamma)
    step_scale = discounted_returns(np.abs(values), traj_ids, step_ids, gamma)
    clusters = dense_ids(list(zip(group_ids, anchors, strict=True)))
    step = _normalise_within(step_returns, clusters, norm, eps, step_scale)
    return episode + step_weight * step


def compute_rloo_advantages(
    rewards: Sequence[float],
    traj_ids: Sequence[Hashable],
    group_ids: Sequence[Hashable],
) -> np.ndarray:
    """RLOO: A_i = R_i - mean_{j != i} R_j over the group's trajectories; singleton groups give 0."""
    values = np.asarray(rewards, dtype=np.float64)
    _check("none", len(values), traj_ids, group_ids)
    traj, returns, traj_group, scale = trajectory_groups(values, traj_ids, group_ids)
    count = np.bincount(traj_group).astype(np.float64)[traj_group]
    centred = _normalise_within(returns, traj_group, "none", EPS, scale)
    loo = np.where(count > 1, centred * count / np.maximum(count - 1, 1), 0.0)
    return loo[traj]


def compute_reinforce_pp_advantages(
    rewards: Sequence[float],
    traj_ids: Sequence[Hashable],
    group_ids: Sequence[Hashable],
    *,
    eps: float = EPS,
) -> np.ndarray:
    """REINFORCE++ (baseline variant): subtract the group mean return, then whiten across the batch."""
    values = np.asarray(rewards, dtype=np.float64)
    _check("none", len(values), traj_ids, group_ids)
    traj, returns, traj_group, scale = trajectory_groups(values, traj_ids, group_ids)
    centred = _normalise_within(returns, traj_group, "none", eps, scale)
    if len(centred) < 2:
        return np.zeros(len(values))
    whitened = (centred - centred.mean()) / (centred.std(ddof=1) + eps)
    return whitened[traj]


def cluster_by_similarity(
    texts: Sequence[str], group_ids: Sequence[Hashable], threshold: float
) -> list[tuple[Hashable, int]]:
    """Anchor keys that merge texts of one group whose similarity ratio is >= ``threshold``.

    Greedy, in row order: each text joins the first earlier cluster of its group whose first
    member (the representative) is similar enough, otherwise it opens a new cluster. The score is
    ``SequenceMatcher(None, text, representative).ratio()``, verl-agent's argument order
    (``are_similar(obs, cluster["rep"])``): difflib's ratio is not symmetric (ratio("aba", "babba")
    is 0.75, ratio("babba", "aba") 0.5), so the order is fixed here to give the authors' clusters.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"similarity threshold={threshold} must be in (0, 1]")
    representatives: dict[Hashable, list[str]] = {}
    keys = []
    for text, group in zip(texts, group_ids, strict=True):
        reps = representatives.setdefault(group, [])
        for idx, rep in enumerate(reps):
            if rep == text or SequenceMatcher(None, text, rep).ratio() >= threshold:
                keys.append((group, idx))
                break
        else:
            reps.append(text)
            keys.append((group, len(reps) - 1))
    return keys


def anchor_stats(group_ids: Sequence[Hashable], anchors: Sequence[Hashable]) -> dict[str, float]:
    """Share of rows in non-singleton anchor clusters and the mean cluster size (GiGPO diagnostics)."""
    clusters = dense_ids(list(zip(group_ids, anchors, strict=True)))
    if len(clusters) == 0:
        return {"anchor_shared_fraction": 0.0, "anchor_mean_cluster_size": 0.0}
    sizes = np.bincount(clusters)
    return {
        "anchor_shared_fraction": float((sizes[clusters] > 1).mean()),
        "anchor_mean_cluster_size": float(sizes.mean()),
    }


# -- registry entries: one shared signature over step rows ----------------------------------------
@register_estimator("grpo")
def _grpo(rewards, traj_ids, step_ids, group_ids, anchors, *, norm="std", eps=EPS, **_):
    return compute_grpo_advantages(rewards, traj_ids, group_ids, norm=norm, eps=eps)


@register_estimator("dr_grpo", verl_name="grpo")
def _dr_grpo(rewards, traj_ids, step_ids, group_ids, anchors, *, eps=EPS, **_):
    # Dr. GRPO's advantage is GRPO's without the std (any ``norm`` is overridden); its other half,
    # the sequence-sum loss over a constant, is the preset's algorithm.loss.loss_agg_mode
    # (``algorithm=dr_grpo``), which the verl backend also sets for this estimator.
    return compute_grpo_advantages(rewards, traj_ids, group_ids, norm="none", eps=eps)


@register_estimator("gigpo")
def _gigpo(
    rewards,
    traj_ids,
    step_ids,
    group_ids,
    anchors,
    *,
    norm="std",
    eps=EPS,
    gamma=0.95,
    step_weight=1.0,
    episode_stats="steps",
    anchor_similarity=None,
    **_,
):
    if anchor_similarity is not None:
        anchors = cluster_by_similarity([str(a) for a in anchors], group_ids, anchor_similarity)
    return compute_gigpo_advantages(
        rewards,
        traj_ids,
        step_ids,
        group_ids,
        anchors,
        gamma=gamma,
        step_weight=step_weight,
        norm=norm,
        episode_stats=episode_stats,
        eps=eps,
    )


@register_estimator("rloo")
def _rloo(rewards, traj_ids, step_ids, group_ids, anchors, **_):
    return compute_rloo_advantages(rewards, traj_ids, group_ids)


@register_estimator("reinforce_pp", verl_name="reinforce_plus_plus")
def _reinforce_pp(rewards, traj_ids, step_ids, group_ids, anchors, *, eps=EPS, **_):
    return compute_reinforce_pp_advantages(rewards, traj_ids, group_ids, eps=eps)
