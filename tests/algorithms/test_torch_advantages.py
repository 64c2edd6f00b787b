"""The tensor estimators (the verl path's) agree with the numpy ones on random step batches."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.algorithms import torch_advantages as ta
from lamina.algorithms.advantages import compute_gigpo_advantages, compute_grpo_advantages


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
