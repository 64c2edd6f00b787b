"""Advantage estimators against hand-computed batches and a loop oracle."""

from __future__ import annotations

from collections import defaultdict
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.algorithms.advantages import (
    ESTIMATORS,
    anchor_stats,
    cluster_by_similarity,
    compute_gigpo_advantages,
    compute_grpo_advantages,
    compute_reinforce_pp_advantages,
    compute_rloo_advantages,
    discounted_returns,
    get_estimator,
    register_estimator,
)

EPS = 1e-6


def test_grpo_hand_computed():
    # group 0: returns 1, 0, 2 (mean 1, sample std 1); group 1: a single trajectory.
    rewards = [0, 1, 0, 0, 0, 2, 5]
    traj = [0, 0, 1, 1, 1, 2, 3]
    group = [0, 0, 0, 0, 0, 0, 1]
    adv = compute_grpo_advantages(rewards, traj, group)
    one = 1 / (1 + EPS)
    np.testing.assert_allclose(adv, [0, 0, -one, -one, -one, one, 0], atol=1e-12)
    # Dr. GRPO: no std.
    np.testing.assert_allclose(
        compute_grpo_advantages(rewards, traj, group, norm="none"), [0, 0, -1, -1, -1, 1, 0]
    )


def test_grpo_ties_give_zero():
    adv = compute_grpo_advantages([1, 1, 1], [0, 1, 2], [0, 0, 0])
    np.testing.assert_array_equal(adv, 0.0)


def _gigpo_batch():
    # traj A (id 10): s -> t -> u, reward 1 at the end. traj B (id 11): s -> s (repeated) -> t, -0.1 once.
    rewards = [0, 0, 1, 0, -0.1, 0]
    traj = [10, 10, 10, 11, 11, 11]
    step = [0, 1, 2, 0, 1, 2]
    group = [7] * 6
    anchors = ["s", "t", "u", "s", "s", "t"]
    return rewards, traj, step, group, anchors


def test_gigpo_hand_computed():
    rewards, traj, step, group, anchors = _gigpo_batch()
    adv = compute_gigpo_advantages(rewards, traj, step, group, anchors, gamma=0.5, episode_stats="trajectory")
    # Episode: returns 1 and -0.1 -> +-0.55 / 0.7778 = +-0.70711.
    a_e = 0.55 / (np.sqrt(2 * 0.55**2) + EPS)
    # Step returns: A = 0.25, 0.5, 1 ; B = -0.05, -0.1, 0.
    s_vals = np.array([0.25, -0.05, -0.1])
    s_norm = (s_vals - s_vals.mean()) / (s_vals.std(ddof=1) + EPS)
    t_norm = 0.25 / (np.sqrt(2 * 0.25**2) + EPS)
    expected = [a_e + s_norm[0], a_e + t_norm, a_e + 0.0, -a_e + s_norm[1], -a_e + s_norm[2], -a_e - t_norm]
    np.testing.assert_allclose(adv, expected, atol=1e-9)
    assert adv[2] == pytest.approx(a_e)  # singleton anchor cluster: step part 0


def test_gigpo_step_weight_and_mean_mode():
    rewards, traj, step, group, anchors = _gigpo_batch()
    no_step = compute_gigpo_advantages(
        rewards, traj, step, group, anchors, gamma=0.5, step_weight=0.0, episode_stats="trajectory"
    )
    np.testing.assert_allclose(no_step, compute_grpo_advantages(rewards, traj, group))
    mean_mode = compute_gigpo_advantages(rewards, traj, step, group, anchors, gamma=0.5, norm="none")
    # "t" cluster: step returns 0.5 and 0 -> +-0.25; episode returns 1, -0.1 -> +-0.55.
    assert mean_mode[1] == pytest.approx(0.55 + 0.25)
    assert mean_mode[5] == pytest.approx(-0.55 - 0.25)


def test_gigpo_episode_stats_over_steps():
    rewards, traj, step, group, anchors = _gigpo_batch()
    adv = compute_gigpo_advantages(
        rewards, traj, step, group, anchors, gamma=0.5, step_weight=0.0, episode_stats="steps"
    )
    row_returns = np.array([1, 1, 1, -0.1, -0.1, -0.1])
    expected = (row_returns - row_returns.mean()) / (row_returns.std(ddof=1) + EPS)
    np.testing.assert_allclose(adv, expected)


# Issue 20, counterexample 1: trajectory a (1 step, R = 1) and b (2 steps, R = 0); a's step and
# b's first step share an anchor. verl-agent's trainer (statistics across the 3 step rows) gives
# [1.862, -1.285, -0.577]; statistics across the 2 trajectories (the paper's Eq. 3) give
# [1.414, -1.414, -0.707].
SHORT_VS_LONG = ([1.0, 0.0, 0.0], ["a", "b", "b"], [0, 0, 1], ["g"] * 3, ["s", "s", "t"])


def test_default_episode_stats_are_verl_agents_step_rows():
    rows = np.array([1.0, 0.0, 0.0])
    a_e = (rows - rows.mean()) / (rows.std(ddof=1) + EPS)  # [2, -1, -1] / sqrt(3)
    a_s = np.array([0.5, -0.5, 0]) / (np.sqrt(0.5) + EPS)
    expected = a_e + a_s
    np.testing.assert_allclose(expected, [1.862, -1.285, -0.577], atol=1e-3)  # the figures
    np.testing.assert_allclose(compute_gigpo_advantages(*SHORT_VS_LONG), expected, atol=1e-12)
    np.testing.assert_allclose(get_estimator("gigpo")(*SHORT_VS_LONG), expected, atol=1e-12)
    paper = compute_gigpo_advantages(*SHORT_VS_LONG, episode_stats="trajectory")
    np.testing.assert_allclose(paper, [1.414, -1.414, -0.707], atol=5e-4)
    preset = Path(__file__).parents[2] / "configs" / "algorithm" / "gigpo.yaml"
    assert "episode_stats: steps" in preset.read_text()


# Issue 20, counterexample 2: a = [10.1] and b = [10.0, 0.1] have the same return (gamma 1) and
# share an anchor; float32 inputs must not turn rounding into an advantage.
EQUAL_RETURNS = ([10.1, 10.0, 0.1], ["a", "b", "b"], [0, 0, 1], ["g"] * 3, ["s", "s", "t"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("episode_stats", ["steps", "trajectory"])
@pytest.mark.parametrize("norm", ["std", "none"])
def test_equal_returns_give_exactly_zero_whatever_the_dtype(dtype, episode_stats, norm):
    rewards, traj, step, group, anchors = EQUAL_RETURNS
    rewards = np.array(rewards, dtype=dtype)
    gigpo = compute_gigpo_advantages(
        rewards, traj, step, group, anchors, gamma=1.0, norm=norm, episode_stats=episode_stats
    )
    np.testing.assert_array_equal(gigpo, 0.0)
    np.testing.assert_array_equal(compute_grpo_advantages(rewards, traj, group, norm=norm), 0.0)
    np.testing.assert_array_equal(compute_rloo_advantages(rewards, traj, group), 0.0)
    np.testing.assert_array_equal(compute_reinforce_pp_advantages(rewards, traj, group), 0.0)


def test_spread_tolerance_is_relative_to_the_absolute_reward_sum():
    # returns 0.1 (= 10.1 - 10, in float32) and 0.1: the rounding of 10.1 is far above 1e-6 * 0.1,
    # but not above 1e-6 * (|10.1| + |-10|).
    rewards = np.array([10.1, -10.0, 0.1], dtype=np.float32)
    np.testing.assert_array_equal(compute_grpo_advantages(rewards, [0, 0, 1], [0, 0, 0]), 0.0)
    # a real spread above the tolerance (std 7e-6 > 1e-6 * 1.00001) keeps its advantage
    adv = compute_grpo_advantages([1.0, 1.0 + 1e-5], [0, 1], [0, 0])
    np.testing.assert_allclose(adv, np.array([-5e-6, 5e-6]) / (np.sqrt(2) * 5e-6 + EPS), rtol=1e-5)
    # three equal float64 values whose mean is not exact (0.1 * 3 / 3)
    np.testing.assert_array_equal(compute_grpo_advantages([0.1] * 3, [0, 1, 2], [0] * 3), 0.0)


def test_discounted_returns_unsorted_rows():
    np.testing.assert_allclose(discounted_returns([1, 0, 0], [0, 0, 0], [2, 0, 1], 0.5), [1, 0.25, 0.5])


def test_rloo_and_reinforce_pp():
    rewards, traj, group = [1, 0, 3, 9], [0, 1, 2, 3], [0, 0, 0, 1]
    np.testing.assert_allclose(compute_rloo_advantages(rewards, traj, group), [1 - 1.5, 0 - 2, 3 - 0.5, 0])
    rpp = compute_reinforce_pp_advantages(rewards, traj, group)
    centred = np.array([-1 / 3, -4 / 3, 5 / 3, 0])
    np.testing.assert_allclose(rpp, (centred - centred.mean()) / (centred.std(ddof=1) + EPS))


# Issue 20, counterexample 3: difflib's ratio is not symmetric; clusters use verl-agent's order,
# ratio(text, representative).
def test_similarity_uses_verl_agents_argument_order():
    assert SequenceMatcher(None, "aba", "babba").ratio() == 0.75
    assert SequenceMatcher(None, "babba", "aba").ratio() == 0.5
    # representative "babba", then text "aba": ratio("aba", "babba") = 0.75 >= 0.6 -> one cluster
    keys = cluster_by_similarity(["babba", "aba"], [0, 0], 0.6)
    assert keys[0] == keys[1]
    # representative "aba", then text "babba": ratio("babba", "aba") = 0.5 -> two clusters
    keys = cluster_by_similarity(["aba", "babba"], [0, 0], 0.6)
    assert keys[0] != keys[1]
    # the advantages: a (R = 1) and b (R = 0) start from similar states, c elsewhere
    rewards, traj, step, group = [1.0, 0.0, 0.5], ["a", "b", "c"], [0, 0, 0], ["g"] * 3
    adv = get_estimator("gigpo")(rewards, traj, step, group, ["babba", "aba", "zzzzz"], anchor_similarity=0.6)
    a_e = (np.array(rewards) - 0.5) / (0.5 + EPS)
    np.testing.assert_allclose(adv, a_e + np.array([0.5, -0.5, 0]) / (np.sqrt(0.5) + EPS), atol=1e-12)


def test_similarity_clustering_and_stats():
    keys = cluster_by_similarity(
        ["You are in a kitchen.", "You are in a kitchen!", "A bathroom."], [0, 0, 0], 0.9
    )
    assert keys[0] == keys[1] != keys[2]
    assert (
        cluster_by_similarity(["same", "same"], [0, 1], 0.99)[0]
        != cluster_by_similarity(["same", "same"], [0, 1], 0.99)[1]
    )
    stats = anchor_stats([0, 0, 0, 1], ["a", "a", "b", "a"])
    assert stats == {"anchor_shared_fraction": 0.5, "anchor_mean_cluster_size": pytest.approx(4 / 3)}


def test_registry_refuses_duplicates_and_bad_options():
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("gigpo")(lambda *a, **k: None)
    with pytest.raises(ValueError, match="norm='max'"):
        compute_grpo_advantages([1, 2], [0, 1], [0, 0], norm="max")
    assert {"grpo", "gigpo", "rloo", "reinforce_pp"} <= set(ESTIMATORS)


# -- a loop oracle and properties ----------------------------------------------------------------
def gigpo_oracle(rewards, traj, step, group, anchors, gamma, w, norm, episode_stats="steps"):
    returns = defaultdict(float)
    for r, t in zip(rewards, traj, strict=True):
        returns[t] += r
    traj_group = {t: g for t, g in zip(traj, group, strict=True)}
    out = []
    for i in range(len(rewards)):
        if episode_stats == "steps":  # one value per step row of the group
            peers = [returns[traj[j]] for j in range(len(rewards)) if group[j] == group[i]]
        else:  # one value per trajectory of the group
            peers = [returns[t] for t in returns if traj_group[t] == group[i]]
        a_e = 0.0
        if len(peers) > 1:
            a_e = returns[traj[i]] - np.mean(peers)
            if norm == "std":
                a_e /= np.std(peers, ddof=1) + EPS

        def rt(j):
            return sum(
                rewards[k] * gamma ** (step[k] - step[j])
                for k in range(len(rewards))
                if traj[k] == traj[j] and step[k] >= step[j]
            )

        cluster = [rt(j) for j in range(len(rewards)) if group[j] == group[i] and anchors[j] == anchors[i]]
        a_s = 0.0
        if len(cluster) > 1:
            a_s = rt(i) - np.mean(cluster)
            if norm == "std":
                a_s /= np.std(cluster, ddof=1) + EPS
        out.append(a_e + w * a_s)
    return np.array(out)


@st.composite
def step_batches(draw):
    n_groups = draw(st.integers(1, 3))
    rows = []
    traj_id = 0
    for g in range(n_groups):
        for _ in range(draw(st.integers(1, 4))):
            length = draw(st.integers(1, 4))
            for s in range(length):
                rows.append(
                    (
                        draw(st.sampled_from([0.0, -0.1, 1.0, 10.0])),
                        traj_id,
                        s,
                        g,
                        draw(st.sampled_from("abcd")),
                    )
                )
            traj_id += 1
    perm = draw(st.permutations(range(len(rows))))
    rows = [rows[i] for i in perm]
    return [list(col) for col in zip(*rows, strict=True)]


@settings(max_examples=60, deadline=None)
@given(step_batches(), st.sampled_from(["std", "none"]), st.sampled_from(["steps", "trajectory"]))
def test_gigpo_matches_oracle(batch, norm, episode_stats):
    rewards, traj, step, group, anchors = batch
    got = compute_gigpo_advantages(
        rewards,
        traj,
        step,
        group,
        anchors,
        gamma=0.9,
        step_weight=0.7,
        norm=norm,
        episode_stats=episode_stats,
    )
    expected = gigpo_oracle(rewards, traj, step, group, anchors, 0.9, 0.7, norm, episode_stats)
    np.testing.assert_allclose(got, expected, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(step_batches(), st.randoms(use_true_random=False))
def test_permuting_rows_permutes_outputs(batch, rnd):
    rewards, traj, step, group, anchors = batch
    perm = list(range(len(rewards)))
    rnd.shuffle(perm)
    base = compute_gigpo_advantages(rewards, traj, step, group, anchors)
    permuted = compute_gigpo_advantages(*([col[i] for i in perm] for col in batch))
    np.testing.assert_allclose(permuted, base[perm], atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(step_batches())
def test_distinct_anchors_reduce_gigpo_to_grpo(batch):
    rewards, traj, step, group, _ = batch
    distinct = list(range(len(rewards)))
    np.testing.assert_allclose(
        compute_gigpo_advantages(rewards, traj, step, group, distinct, episode_stats="trajectory"),
        compute_grpo_advantages(rewards, traj, group),
        atol=1e-12,
    )


@settings(max_examples=40, deadline=None)
@given(step_batches(), st.floats(-5, 5))
def test_equal_returns_give_zero(batch, value):
    rewards, traj, step, group, anchors = batch
    # One reward per trajectory (on its first step) makes every return equal to `value`.
    equal = [value if s == 0 else 0.0 for s in step]
    np.testing.assert_array_equal(compute_grpo_advantages(equal, traj, group), 0.0)
    np.testing.assert_array_equal(compute_rloo_advantages(equal, traj, group), 0.0)
    np.testing.assert_array_equal(
        compute_gigpo_advantages(equal, traj, step, group, list(step), gamma=1), 0.0
    )
    zeros = [0.0] * len(rewards)
    np.testing.assert_array_equal(compute_gigpo_advantages(zeros, traj, step, group, anchors), 0.0)


def test_one_estimator_table_serves_both_backends():
    from lamina.algorithms.advantages import VERL_NAMES, estimator_of_verl_name

    assert VERL_NAMES["reinforce_pp"] == "reinforce_plus_plus" and VERL_NAMES["gigpo"] == "gigpo"
    assert estimator_of_verl_name("reinforce_plus_plus") == "reinforce_pp"
    assert estimator_of_verl_name("grpo") == "grpo"  # not its variant dr_grpo
    with pytest.raises(ValueError, match="algorithm.adv_estimator='ppo'; per-step rows support grpo"):
        estimator_of_verl_name("ppo")


def test_a_new_estimator_is_one_function_and_one_registration(monkeypatch):
    from lamina.algorithms import advantages

    monkeypatch.setattr(advantages, "ESTIMATORS", dict(advantages.ESTIMATORS))
    monkeypatch.setattr(advantages, "VERL_NAMES", dict(advantages.VERL_NAMES))

    @advantages.register_estimator("median_baseline", verl_name="lamina_median")
    def median(rewards, traj_ids, step_ids, group_ids, anchors, **_):
        return np.asarray(rewards, dtype=np.float64) - np.median(rewards)

    assert advantages.get_estimator("median_baseline") is median
    assert advantages.estimator_of_verl_name("lamina_median") == "median_baseline"
    with pytest.raises(ValueError, match="already registered"):
        advantages.register_estimator("median_baseline")(lambda *a, **k: None)


def test_dr_grpo_is_grpo_without_std():
    rewards, traj, step, group, anchors = (
        [1.0, 0.0, 3.0, 2.0],
        [0, 1, 2, 3],
        [0, 0, 0, 0],
        [0, 0, 1, 1],
        "abcd",
    )
    np.testing.assert_allclose(
        get_estimator("dr_grpo")(rewards, traj, step, group, list(anchors), norm="std"),
        compute_grpo_advantages(rewards, traj, group, norm="none"),
    )
