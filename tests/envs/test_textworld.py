"""TextWorld environment: determinism, the contract's info keys, invalid actions, the walkthrough."""

from __future__ import annotations

import pytest

import lamina.envs as envs


@pytest.fixture(scope="module")
def env():
    e = envs.make("textworld", challenge="tw-treasure_hunter", settings={"level": 1})
    yield e
    e.close()


def test_reset_is_deterministic(env):
    obs_a, info_a = env.reset(seed=3)
    step_a = env.step(info_a["admissible_actions"][0])
    other = envs.make("textworld", challenge="tw-treasure_hunter", settings={"level": 1})
    obs_b, info_b = other.reset(seed=3)
    step_b = other.step(info_b["admissible_actions"][0])
    other.close()
    assert obs_a == obs_b and info_a["task"] == info_b["task"] and info_a["anchor"] == info_b["anchor"]
    assert step_a[0] == step_b[0] and step_a[1] == step_b[1]
    obs_c, info_c = env.reset(seed=4)
    assert (obs_c, info_c["anchor"]) != (obs_a, info_a["anchor"])


def test_info_contract(env):
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and "-= " in obs and "$$" not in obs  # banner stripped
    assert info["task"] and info["won"] is False and info["action_valid"] is True
    assert "look" in info["admissible_actions"] and "help" not in info["admissible_actions"]
    hash(info["anchor"])


@pytest.mark.parametrize("junk", ["", "dance", "x" * 100_000, "<action>go north</action>", "ünïcødé ☃", None])
def test_invalid_actions_leave_state_unchanged(env, junk):
    _, info = env.reset(seed=0)
    obs, reward, terminated, truncated, after = env.step(junk)
    assert after["action_valid"] is False and reward == 0.0 and not terminated and not truncated
    assert after["anchor"] == info["anchor"] and "not a valid action" in obs and len(obs) < 300


def test_equal_states_equal_anchors(env):
    _, info = env.reset(seed=0)
    _, _, _, _, after_look = env.step("look")
    assert after_look["anchor"] == info["anchor"]


def test_walkthrough_expert_wins(env):
    for seed in range(3):
        _, info = env.reset(seed=seed)
        total, done = 0.0, False
        while not done and (action := env.unwrapped.expert_action()) is not None:
            _, reward, terminated, truncated, info = env.step(action)
            total += reward
            done = terminated or truncated
        assert info["won"] and total == info["max_score"] > 0


def test_bad_challenge_names_valid_ones():
    with pytest.raises(ValueError, match="tw-coin_collector"):
        envs.make("textworld", challenge="tw-zork")


def test_unknown_env_names_valid_ones():
    with pytest.raises(ValueError, match="textworld"):
        envs.resolve_env_id("zork")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("challenge", "settings"),
    [
        ("tw-simple", {}),
        ("tw-coin_collector", {"level": 2}),
        ("tw-treasure_hunter", {"level": 3}),
        ("tw-cooking", {"recipe": 1, "take": 1, "go": 1}),
    ],
)
def test_every_challenge_generates_and_its_walkthrough_wins(challenge, settings, tmp_path):
    env = envs.make("textworld", challenge=challenge, settings=settings, game_dir=str(tmp_path))
    _, info = env.reset(seed=11)
    assert info["task"] and info["admissible_actions"]
    steps = 0
    while (action := env.unwrapped.expert_action()) is not None and steps < 100:
        _, _, terminated, _, info = env.step(action)
        steps += 1
        if terminated:
            break
    env.close()
    assert info["won"], f"{challenge}: walkthrough did not win after {steps} steps"
