"""Bootstrap over a (seeds x episodes) score matrix, percentile intervals, and rank correlations
computed for many bootstrap replicates at once.

A sweep's evaluation is a crossed design: every trained seed is evaluated on the same held-out
episodes. A replicate resamples seeds and episodes independently, with replacement, and applies
the same draw to every arm of the sweep (the arms share their episodes, so differences between
arms are paired); its score is the mean over the drawn cells, ``c_s^T M c_e / (S * E)`` for draw
counts ``c_s`` (S,) and ``c_e`` (E,).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def bootstrap_counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each replicate, (B, n); every row sums to ``n``."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates)


def resampled_means(matrix: np.ndarray, seed_counts: np.ndarray, episode_counts: np.ndarray) -> np.ndarray:
    """Mean of the resampled cells of a (S, E) score matrix for each replicate.

    Args:
        matrix: (S, E) scores, one row per training seed, one column per held-out episode.
        seed_counts: (B, S) draw counts of the seeds.
        episode_counts: (B, E) draw counts of the episodes.
    Returns:
        (B,) replicate means.
    """
    s, e = matrix.shape
    return np.einsum("bs,se,be->b", seed_counts, matrix, episode_counts) / (s * e)


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of the finite values (NaN, NaN when none)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (B, n) arrays: Pearson's r of average ranks (ties share
    their mean rank, as ``scipy.stats.spearmanr``); NaN where a row is constant."""
    rx = rankdata(np.atleast_2d(x), axis=1)
    ry = rankdata(np.atleast_2d(y), axis=1)
    rx = rx - rx.mean(axis=1, keepdims=True)
    ry = ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of (B, n) arrays (``scipy.stats.kendalltau``'s default):
    sum_{i<j} sx_ij sy_ij / sqrt(sum sx_ij^2 * sum sy_ij^2) with sx_ij = sign(x_i - x_j); NaN where a
    row is constant. O(n^2) per row, meant for tens of blocks."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    i, j = np.triu_indices(x.shape[1], k=1)
    sx = np.sign(x[:, i] - x[:, j])  # (B, pairs)
    sy = np.sign(y[:, i] - y[:, j])
    denom = np.sqrt((sx * sx).sum(axis=1) * (sy * sy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (sx * sy).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)
