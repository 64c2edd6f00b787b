"""lamina's estimators inside verl agree with the numpy ones; the loss comes from verl's core_algos.

verl is a dependency of lamina (the losses are its ``core_algos``), so it is imported, not skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl.trainer.ppo import core_algos as verl_core

from lamina.algorithms import torch_advantages as ta
from lamina.algorithms.advantages import compute_gigpo_advantages, get_estimator
from lamina.algorithms.losses import LossConfig, policy_loss, verl_actor_config


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


# Issue 20, counterexample 2: a = [10.1] and b = [10.0, 0.1] (equal returns, gamma 1) sharing an
# anchor, as float32 token rewards. Before: [0.358, -0.254, -0.104] (episode_stats=steps).
def _equal_returns_dataproto_fields():
    token_rewards = torch.tensor([[0.0, 10.1], [10.0, 0.0], [0.1, 0.0]], dtype=torch.float32)
    mask = torch.tensor([[1, 1], [1, 0], [1, 0]], dtype=torch.float32)
    non_tensor = {
        "uid": np.array(["g"] * 3, dtype=object),
        "traj_uid": np.array(["a", "b", "b"], dtype=object),
        "step_id": np.array([0, 0, 1]),
        "anchor": np.array(["s", "s", "t"], dtype=object),
    }
    return token_rewards, mask, non_tensor


@pytest.mark.parametrize("episode_stats", ["steps", "trajectory"])
@pytest.mark.parametrize("norm", ["std", "none"])
def test_equal_float32_returns_give_zero_through_verls_registry(episode_stats, norm):
    import lamina.integrations.verl.estimators  # noqa: F401  (registers "gigpo")

    token_rewards, mask, non_tensor = _equal_returns_dataproto_fields()
    adv, _ = verl_core.get_adv_estimator_fn("gigpo")(
        token_level_rewards=token_rewards,
        response_mask=mask,
        index=non_tensor["uid"],
        config={"gigpo": {"gamma": 1.0, "episode_stats": episode_stats, "norm": norm}},
        non_tensor_batch=non_tensor,
    )
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.zeros_like(adv), atol=0, rtol=0)
    # the tensor functions themselves, on float32 rows
    rows = torch.tensor([10.1, 10.0, 0.1], dtype=torch.float32)
    got = ta.gigpo_advantages(
        rows, ["a", "b", "b"], torch.tensor([0, 0, 1]), ["g"] * 3, ["s", "s", "t"], gamma=1.0, norm=norm
    )
    assert got.dtype == torch.float64 and torch.all(got == 0)
    assert torch.all(ta.grpo_advantages(rows, ["a", "b", "b"], ["g"] * 3, norm=norm) == 0)


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_plus_plus"])
def test_equal_float32_returns_give_zero_on_verls_step_rows(estimator):
    # lamina's verl backend: algorithm.adv_estimator=grpo/rloo over step rows runs lamina's estimators
    from omegaconf import OmegaConf
    from verl import DataProto

    from lamina.integrations.verl.trainer import step_advantages

    token_rewards, mask, non_tensor = _equal_returns_dataproto_fields()
    batch = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask}, non_tensors=non_tensor
    )
    algorithm = OmegaConf.create({"adv_estimator": estimator, "norm_adv_by_std_in_grpo": True})
    adv = step_advantages(batch, algorithm)
    torch.testing.assert_close(adv, torch.zeros_like(adv), atol=0, rtol=0)
    # and lamina's estimators on the float32 row rewards directly
    rows = np.array([10.1, 10.0, 0.1], dtype=np.float32)
    for name in ("grpo", "rloo", "reinforce_pp", "gigpo"):
        got = get_estimator(name)(rows, ["a", "b", "b"], [0, 0, 1], ["g"] * 3, ["s", "s", "t"], gamma=1.0)
        np.testing.assert_array_equal(got, 0.0)


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
