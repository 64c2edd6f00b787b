"""The bootstrap and rank-correlation helpers against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from lamina.study.stats import (
    bootstrap_counts,
    kendall_tau_b_rows,
    percentile_interval,
    resampled_means,
    spearman_rows,
)


@pytest.mark.parametrize("values", [10, 3])  # 3 distinct values: many ties
def test_rank_correlations_equal_scipy(values):
    rng = np.random.default_rng(1)
    x = rng.integers(0, values, size=(40, 7)).astype(float)
    y = x + rng.integers(0, values, size=(40, 7))
    rho, tau = spearman_rows(x, y), kendall_tau_b_rows(x, y)
    for b in range(len(x)):
        if np.ptp(x[b]) == 0 or np.ptp(y[b]) == 0:
            assert np.isnan(rho[b]) and np.isnan(tau[b])
            continue
        assert rho[b] == pytest.approx(spearmanr(x[b], y[b]).statistic, abs=1e-12)
        assert tau[b] == pytest.approx(kendalltau(x[b], y[b]).statistic, abs=1e-12)


def test_constant_rows_give_nan():
    x = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    y = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert np.isnan(spearman_rows(x, y)[0]) and spearman_rows(x, y)[1] == pytest.approx(-1.0)
    assert np.isnan(kendall_tau_b_rows(x, y)[0]) and kendall_tau_b_rows(x, y)[1] == pytest.approx(-1.0)


def test_resampled_means_match_a_loop_over_drawn_cells():
    rng = np.random.default_rng(0)
    matrix = rng.random((3, 5))
    seeds, episodes = bootstrap_counts(rng, 3, 20), bootstrap_counts(rng, 5, 20)
    assert (seeds.sum(1) == 3).all() and (episodes.sum(1) == 5).all()
    fast = resampled_means(matrix, seeds, episodes)
    for b in range(20):
        rows = np.repeat(np.arange(3), seeds[b])
        cols = np.repeat(np.arange(5), episodes[b])
        assert fast[b] == pytest.approx(matrix[np.ix_(rows, cols)].mean())


def test_bootstrap_interval_of_a_success_rate_matches_the_normal_width():
    # 120 wins in 400 episodes: the 95% interval is about p +- 1.96 sqrt(p (1 - p) / n).
    won = np.zeros((1, 400))
    won[0, :120] = 1
    rng = np.random.default_rng(0)
    reps = resampled_means(won, bootstrap_counts(rng, 1, 4000), bootstrap_counts(rng, 400, 4000))
    lo, hi = percentile_interval(reps, 0.95)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 400)
    assert lo == pytest.approx(0.3 - half, abs=0.008) and hi == pytest.approx(0.3 + half, abs=0.008)


def test_percentile_interval_ignores_nan():
    assert percentile_interval(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert all(np.isnan(percentile_interval(np.array([np.nan]))))
