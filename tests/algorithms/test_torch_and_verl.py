"""The tensor/verl versions agree with the numpy estimators; the loss comes from verl's core_algos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.algorithms import torch_advantages as ta
from lamina.algorithms.advantages import compute_gigpo_advantages, compute_grpo_advantages
from lamina.algorithms.losses import LossConfig, policy_loss, verl_actor_config

verl_core = pytest.importorskip("verl.trainer.ppo.core_algos")


@st.composite
def step_batches(draw):
    rows, traj_id = [], 0
    for g in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(1, 4))):
            for s in range(draw(st.integers(1, 5))):
                rows.append(
                    (draw(st.floats(-2, 10, allow_nan=False)), traj_id, s, g, draw(st.sampled_from("abc")))
                )
            traj_id += 1
    rows = [rows[i] for i in draw(st.permutations(range(len(rows))))]
    return [list(col) for col in zip(*rows, strict=True)]


@settings(max_examples=60, deadline=None)
@given(step_batches(), st.sampled_from(["std", "none"]), st.sampled_from(["trajectory", "steps"]))
def test_torch_matches_numpy(batch, norm, episode_stats):
    rewards, traj, step, group, anchors = batch
    options = dict(gamma=0.9, step_weight=0.5, norm=norm, episode_stats=episode_stats)
    expected = compute_gigpo_advantages(rewards, traj, step, group, anchors, **options)
    got = ta.gigpo_advantages(
        torch.tensor(rewards, dtype=torch.float64), traj, torch.tensor(step), group, anchors, **options
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(
        ta.grpo_advantages(torch.tensor(rewards, dtype=torch.float64), traj, group, norm=norm).numpy(),
        compute_grpo_advantages(rewards, traj, group, norm=norm),
        atol=1e-6,
    )


def test_gigpo_is_registered_in_verl_and_token_level():
    import lamina.integrations.verl.estimators  # noqa: F401  (registers "gigpo")

    fn = verl_core.get_adv_estimator_fn("gigpo")
    rewards = [0.0, 0.0, 1.0, 0.0, -0.1, 0.0]
    mask = torch.tensor(
        [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.float32
    )
    token_rewards = torch.zeros(6, 3)
    for i, r in enumerate(rewards):  # the step reward sits on the row's last response token
        token_rewards[i, int(mask[i].sum()) - 1] = r
    non_tensor = {
        "uid": np.array(["g"] * 6, dtype=object),
        "traj_uid": np.array([0, 0, 0, 1, 1, 1]),
        "step_id": np.array([0, 1, 2, 0, 1, 2]),
        "anchor": np.array(list("stussst"[:6]), dtype=object),
    }
    adv, returns = fn(
        token_level_rewards=token_rewards,
        response_mask=mask,
        index=non_tensor["uid"],
        config={"gigpo": {"gamma": 0.5}},
        non_tensor_batch=non_tensor,
    )
    row = compute_gigpo_advantages(
        rewards, [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2], ["g"] * 6, list("stussst"[:6]), gamma=0.5
    )
    torch.testing.assert_close(adv, torch.tensor(row, dtype=torch.float32)[:, None] * mask)
    assert torch.equal(adv, returns) and torch.all(adv[mask == 0] == 0)
    with pytest.raises(ValueError, match="traj_uid"):
        fn(token_level_rewards=token_rewards, response_mask=mask, index=non_tensor["uid"])


def _loss(cfg, log_probs, old, adv, mask, ref=None):
    actor = verl_actor_config(cfg, int(mask.sum()), mask.shape[0], scale_factor=4)
    return policy_loss(log_probs, old, adv, mask, actor, cfg, ref)


def test_ppo_clip_and_dual_clip():
    mask = torch.ones(1, 1)
    old = torch.zeros(1, 1)
    up = torch.log(torch.tensor([[1.5]]))  # ratio 1.5
    loss, m = _loss(LossConfig(clip_ratio=0.2), up, old, torch.ones(1, 1), mask)
    assert loss.item() == pytest.approx(-1.2) and m["pg_clipfrac"] == 1.0
    big = torch.log(torch.tensor([[5.0]]))  # ratio 5 with a negative advantage
    plain, _ = _loss(LossConfig(clip_ratio=0.2), big, old, -torch.ones(1, 1), mask)
    dual, _ = _loss(LossConfig(clip_ratio=0.2, clip_ratio_c=3.0), big, old, -torch.ones(1, 1), mask)
    assert plain.item() == pytest.approx(5.0) and dual.item() == pytest.approx(3.0)


def test_aggregation_modes_and_kl():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    lp = torch.zeros(2, 4)
    adv = torch.tensor([[1.0] * 4, [4.0] * 4])
    token_mean, _ = _loss(LossConfig(), lp, lp, adv, mask)
    assert token_mean.item() == pytest.approx(-(1 + 1 + 4) / 3)
    dr, _ = _loss(LossConfig(loss_agg_mode="seq-mean-token-sum-norm"), lp, lp, adv, mask)
    assert dr.item() == pytest.approx(-((1 + 1) + 4) / 2 / 4)  # sums per sequence, mean, / constant 4
    ref = torch.full((2, 4), -0.5)
    with_kl, m = _loss(LossConfig(kl_coef=0.1), lp, lp, adv, mask, ref)
    k3 = np.exp(-0.5) + 0.5 - 1  # low-variance KL estimator at log-ratio -0.5
    assert m["kl"] == pytest.approx(k3, rel=1e-5)
    assert with_kl.item() == pytest.approx(token_mean.item() + 0.1 * k3, rel=1e-5)
