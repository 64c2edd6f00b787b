"""GiGPO on a verl DataProto of step rows (through verl's estimator registry) equals lamina's numpy
estimator; the other estimators over step rows give each trajectory's advantage to all its rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lamina.algorithms.advantages import compute_gigpo_advantages, compute_grpo_advantages
from lamina.integrations.verl.rollout import StepRows, to_dataproto
from lamina.integrations.verl.trainer import pad_rows, step_advantages


def make_rows(seed: int = 0) -> StepRows:
    """3 groups x 3 trajectories with 1-5 steps each, anchors shared inside groups, rows shuffled."""
    rng = np.random.default_rng(seed)
    records = []
    for g in range(3):
        for copy in range(3):
            t = 3 * g + copy
            for s in range(int(rng.integers(1, 6))):
                records.append((g, t, s, f"state{int(rng.integers(0, 3))}", float(rng.normal())))
    records = [records[i] for i in rng.permutation(len(records))]
    n = len(records)
    return StepRows(
        prompt_ids=[[5 + int(rng.integers(0, 50)) for _ in range(int(rng.integers(2, 7)))] for _ in range(n)],
        response_ids=[
            [60 + int(rng.integers(0, 50)) for _ in range(int(rng.integers(1, 5)))] for _ in range(n)
        ],
        response_log_probs=[None] * n,
        rewards=np.array([r[4] for r in records]),
        group_uids=[f"g{r[0]}" for r in records],
        traj_uids=[f"t{r[1]}" for r in records],
        step_ids=np.array([r[2] for r in records]),
        anchors=[("room", r[3]) for r in records],  # tuple anchors must stay one object per row
        action_valid=np.ones(n, dtype=bool),
        episode_returns=np.zeros(9),
        episode_won=np.zeros(9, dtype=bool),
        episode_lengths=np.ones(9),
    )


def algorithm(estimator: str, **gigpo) -> OmegaConf:
    return OmegaConf.create({"adv_estimator": estimator, "norm_adv_by_std_in_grpo": True, "gigpo": gigpo})


def with_rewards(batch):
    batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
    return batch


@pytest.mark.parametrize("options", [{}, {"gamma": 0.8, "step_weight": 0.5, "norm": "none"}])
def test_gigpo_on_dataproto_equals_numpy(options):
    rows = make_rows()
    batch = with_rewards(to_dataproto(rows, 0, max_prompt_length=16, max_response_length=8))
    assert batch.non_tensor_batch["anchor"].shape == (len(rows),)
    advantages = step_advantages(batch, algorithm("gigpo", **options))
    expected = compute_gigpo_advantages(
        rows.rewards,
        rows.traj_uids,
        rows.step_ids,
        rows.group_uids,
        rows.anchors,
        gamma=options.get("gamma", 0.95),
        step_weight=options.get("step_weight", 1.0),
        norm=options.get("norm", "std"),
    )
    mask = batch.batch["response_mask"].bool()
    # every response token of a row carries the row's advantage; padding carries 0
    per_row = advantages.sum(-1) / mask.sum(-1)
    np.testing.assert_allclose(per_row.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(advantages[~mask] == 0)


def test_grpo_over_step_rows_uses_episode_returns():
    rows = make_rows(1)
    batch = with_rewards(to_dataproto(rows, 0, max_prompt_length=16, max_response_length=8))
    advantages = step_advantages(batch, algorithm("grpo"))
    expected = compute_grpo_advantages(rows.rewards, rows.traj_uids, rows.group_uids)
    per_row = advantages.sum(-1) / batch.batch["response_mask"].sum(-1)
    np.testing.assert_allclose(per_row.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_pad_rows_adds_masked_copies_only():
    rows = make_rows(2)
    batch = with_rewards(to_dataproto(rows, 0, max_prompt_length=16, max_response_length=8))
    batch.batch["advantages"] = step_advantages(batch, algorithm("gigpo"))
    n = len(batch)
    padded, per_mini = pad_rows(batch, mini_batches=3, unit=4)
    assert per_mini % 4 == 0 and len(padded) == 3 * per_mini >= n > 3 * (per_mini - 4)
    assert torch.equal(padded.batch["advantages"][:n], batch.batch["advantages"])
    assert padded.batch["response_mask"][n:].sum() == 0 and padded.batch["advantages"][n:].abs().sum() == 0


def test_an_empty_response_keeps_its_reward():
    rows = make_rows(3)
    rows.response_ids[0] = []
    batch = to_dataproto(rows, 7, max_prompt_length=16, max_response_length=8)
    assert batch.batch["response_mask"][0].sum() == 1 and batch.batch["responses"][0, 0] == 7
    assert batch.batch["rm_scores"][0, 0].item() == pytest.approx(rows.rewards[0])
