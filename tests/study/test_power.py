"""Resolved differences and the seeds/episodes that would resolve one, on synthetic scores with
known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.study.power import all_differences, find_pair, paired_difference, required_n

Z = 1.959963984540054 + 0.8416212335729143  # z_{0.975} + z_{0.8}


def test_required_n_is_the_normal_approximation():
    assert required_n(1.0, 0.5) == math.ceil((Z * 1.0 / 0.5) ** 2) == 32
    assert required_n(2.0, -0.5) == math.ceil((Z * 2.0 / 0.5) ** 2) == 126
    assert required_n(1.0, 0.0) == math.inf
    assert math.isnan(required_n(float("nan"), 0.3))
    assert required_n(1.0, 0.5, power=0.9) == math.ceil(((1.959964 + 1.281552) * 2) ** 2)


def test_a_clear_lead_is_resolved_and_identical_arms_are_not():
    a = {s: np.ones(20) for s in range(3)}
    b = {s: np.zeros(20) for s in range(3)}
    d = paired_difference(a, b, ("a", "b"), replicates=300)
    assert d is not None and d.difference == 1.0 and (d.difference_lo, d.difference_hi) == (1.0, 1.0)
    assert d.resolved and d.seeds == 3 and d.episodes == 20
    assert d.seeds_needed == 0 and d.episodes_needed == 0  # no spread: any size resolves it
    rng = np.random.default_rng(0)
    same = {s: rng.integers(0, 2, 20).astype(float) for s in range(3)}
    tie = paired_difference(same, same, ("a", "a2"), replicates=300)
    assert tie is not None and tie.difference == 0 and not tie.resolved and tie.seeds_needed == math.inf


def test_seed_and_episode_needs_follow_the_observed_spread():
    # Per-seed differences 0.1, 0.2, 0.3 (constant over episodes): delta 0.2, sigma_seed 0.1,
    # and every episode's mean difference is 0.2 (sigma_episode 0).
    base = np.linspace(0.0, 0.5, 10)
    b = {s: base.copy() for s in range(3)}
    a = {s: base + 0.1 * (s + 1) for s in range(3)}
    d = paired_difference(a, b, ("a", "b"), replicates=500)
    assert d is not None and d.difference == pytest.approx(0.2)
    assert d.seeds_needed == math.ceil((Z * 0.1 / 0.2) ** 2) == 2
    assert d.episodes_needed == 0
    # Differences that vary over episodes only: +-0.5 alternating around a 0.1 lead.
    e = np.array([0.6, -0.4] * 5)
    a2 = {s: base + e for s in range(2)}
    d2 = paired_difference(a2, {s: base.copy() for s in range(2)}, ("a", "b"), replicates=500)
    sigma_e = float(np.std(e, ddof=1))
    assert d2 is not None and d2.episodes_needed == math.ceil((Z * sigma_e / 0.1) ** 2)
    assert d2.seeds_needed == 0  # both seeds have the same mean difference
    assert d2.scale_needed > 1 and not d2.resolved
    one_seed = paired_difference({0: a[0]}, {0: b[0]}, ("a", "b"), replicates=200)
    assert one_seed is not None and math.isnan(one_seed.seeds_needed)


def test_all_pairs_and_finding_one_in_either_order():
    arms = {"base": {0: np.zeros(8)}, "full": {0: np.ones(8)}, 3: {0: np.full(8, 0.5)}}
    diffs = all_differences(arms, replicates=200)
    assert [(d.arm_a, d.arm_b) for d in diffs] == [("base", "full"), ("base", "block 3"), ("full", "block 3")]
    flipped = find_pair(diffs, "3", "full")
    assert flipped is not None and flipped.difference == pytest.approx(-0.5)
    assert (flipped.arm_a, flipped.arm_b) == ("block 3", "full")
    assert find_pair(diffs, "block 9", "full") is None
