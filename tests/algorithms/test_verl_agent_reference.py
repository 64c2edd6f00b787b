"""lamina's GiGPO against figures computed by the authors' own code.

data/verl_agent_gigpo_reference.json holds advantages that verl-agent's ``gigpo/core_gigpo.py``
(https://github.com/vanzll/verl-agent at d0b97244c50f17fb43a6ef0a15bca0e95a044ff7, loaded
unmodified) computed on 12 fixed batches under 17 settings: norm std/none, gamma 0.95/0.5/1,
w 1/0.5, episode statistics across step rows (what its trainer runs) and across trajectories,
exact and similarity anchors. make_verl_agent_reference.py wrote it and says how. verl-agent
computes in float32, lamina in float64: they agree to 1e-6 * (1 + |A|).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.algorithms import torch_advantages as ta
from lamina.algorithms.advantages import cluster_by_similarity, get_estimator

REFERENCE = json.loads((Path(__file__).parent / "data" / "verl_agent_gigpo_reference.json").read_text())
SETTINGS = REFERENCE["settings"]
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _id(setting: dict) -> str:
    o = setting["lamina"]
    sim = f"-sim{o['anchor_similarity']}" if o["anchor_similarity"] is not None else ""
    return f"{o['norm']}-{o['episode_stats']}-g{o['gamma']}-w{o['step_weight']}{sim}"


def _anchors(batch: dict, similarity: float | None) -> list[str]:
    """The batch's anchors, or its similarity clusters as keys (for the paths that take keys)."""
    if similarity is None:
        return batch["anchor"]
    return [f"{g}/{i}" for g, i in cluster_by_similarity(batch["anchor"], batch["uid"], similarity)]


def test_reference_names_its_source_and_covers_the_settings():
    assert REFERENCE["repo"] == "https://github.com/vanzll/verl-agent"
    assert REFERENCE["commit"] == "d0b97244c50f17fb43a6ef0a15bca0e95a044ff7"
    assert REFERENCE["path"] == "gigpo/core_gigpo.py"
    options = [s["lamina"] for s in SETTINGS]
    assert {o["norm"] for o in options} == {"std", "none"}
    assert {o["episode_stats"] for o in options} == {"steps", "trajectory"}
    assert {o["gamma"] for o in options} == {0.95, 0.5, 1.0}
    assert {o["step_weight"] for o in options} == {1.0, 0.5}
    assert {o["anchor_similarity"] for o in options} == {None, 0.6, 0.9}
    # verl-agent's trainer runs the step-row statistics: that is lamina's default too
    assert all(
        s["verl_agent"]["compute_mean_std_cross_steps"] == (s["lamina"]["episode_stats"] == "steps")
        for s in SETTINGS
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_numpy_estimator_matches_verl_agent(setting):
    options = setting["lamina"]
    for batch, expected in zip(REFERENCE["batches"], setting["advantages"], strict=True):
        got = get_estimator("gigpo")(
            batch["rewards"], batch["traj_uid"], batch["step_id"], batch["uid"], batch["anchor"], **options
        )
        np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_torch_estimator_matches_verl_agent(setting):
    options = dict(setting["lamina"])
    similarity = options.pop("anchor_similarity")
    for batch, expected in zip(REFERENCE["batches"], setting["advantages"], strict=True):
        got = ta.gigpo_advantages(
            torch.tensor(batch["rewards"], dtype=torch.float32),
            batch["traj_uid"],
            torch.tensor(batch["step_id"]),
            batch["uid"],
            _anchors(batch, similarity),
            **options,
        )
        np.testing.assert_allclose(got.numpy(), expected, **TOL)


@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_verl_registry_matches_verl_agent(setting):
    verl_core = pytest.importorskip("verl.trainer.ppo.core_algos")
    import lamina.integrations.verl.estimators  # noqa: F401  (registers "gigpo")

    options = dict(setting["lamina"])
    similarity = options.pop("anchor_similarity")
    fn = verl_core.get_adv_estimator_fn("gigpo")
    for batch, expected in zip(REFERENCE["batches"], setting["advantages"], strict=True):
        n = len(batch["rewards"])
        mask = torch.ones(n, 3)
        token_rewards = torch.zeros(n, 3)  # float32, the step reward on the last token
        token_rewards[:, -1] = torch.tensor(batch["rewards"])
        non_tensor = {
            "uid": np.array(batch["uid"], dtype=object),
            "traj_uid": np.array(batch["traj_uid"], dtype=object),
            "step_id": np.array(batch["step_id"]),
            "anchor": np.array(_anchors(batch, similarity), dtype=object),
        }
        adv, _ = fn(
            token_level_rewards=token_rewards,
            response_mask=mask,
            index=non_tensor["uid"],
            config={"gigpo": options},
            non_tensor_batch=non_tensor,
        )
        np.testing.assert_allclose(adv[:, -1].numpy(), expected, **TOL)
