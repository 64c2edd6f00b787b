import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.envs.frozenlake import FrozenLakeEnv
from lamina.envs.registry import register

ENV_ID = register(
    "FrozenLake-v0", "lamina.envs.frozenlake:FrozenLakeEnv", short_name="frozenlake", max_episode_steps=20
)
SMALL_MAP = ["SFF", "FHF", "FFG"]
JUNK = ["", "   ", "north", "<action><think>", "x" * 100_000, "ħ€ł☃", "up down", "\x00"]


def test_check_env():
    check_env(FrozenLakeEnv())
    check_env(FrozenLakeEnv(size=6, is_slippery=True))


def test_expert_reaches_goal_on_random_maps():
    for size in (4, 6):
        env = FrozenLakeEnv(size=size)
        for seed in range(20):
            obs, info = env.reset(seed=seed)
            assert obs.splitlines()[0][0] == "P" and obs.count("G") == 1
            total, steps, terminated = 0.0, 0, False
            while not terminated:
                obs, reward, terminated, _, info = env.step(env.expert_action())
                total, steps = total + reward, steps + 1
            assert info["won"] and total == 1.0 and "reached the goal" in obs
            assert steps >= 2 * (size - 1) and env.expert_action() is None


def test_maps_have_holes_and_depend_on_seed():
    maps = {FrozenLakeEnv().reset(seed=seed)[1]["anchor"][2] for seed in range(30)}
    assert len(maps) > 20
    assert any("H" in m for m in maps)


def test_reset_and_steps_are_deterministic_by_seed():
    moves = ["right", "down", "down", "right", "left", "down", "right"]
    for slippery in (False, True):
        first, second = FrozenLakeEnv(is_slippery=slippery), FrozenLakeEnv(is_slippery=slippery)
        for seed in range(5):
            assert first.reset(seed=seed) == second.reset(seed=seed)
            for move in moves:
                assert first.step(move) == second.step(move)


def test_hand_built_map_hole_edge_and_goal():
    env = FrozenLakeEnv()
    obs, info = env.reset(options={"map": SMALL_MAP})
    assert obs == "P__\n_H_\n__G"
    assert info["anchor"] == (0, 0, "___\n_H_\n__G")
    assert info["admissible_actions"] == ["up", "down", "left", "right"]

    obs, reward, terminated, _, info = env.step("UP")  # off the edge: valid, no effect
    assert info["action_valid"] and info["anchor"][:2] == (0, 0) and "edge" in obs
    assert reward == 0.0 and not terminated

    env.step("right")
    obs, reward, terminated, _, info = env.step("down")
    assert "hole" in obs and terminated and reward == 0.0 and not info["won"]
    assert env.expert_action() is None

    env.reset(options={"map": SMALL_MAP})
    rewards = [env.step(move)[1] for move in ["down", "down", "right"]]
    obs, reward, terminated, _, info = env.step("right")
    assert rewards == [0.0, 0.0, 0.0] and reward == 1.0 and terminated and info["won"]
    assert obs.endswith("__P")


def test_slippery_moves_sometimes_slip():
    env = FrozenLakeEnv(is_slippery=True, hole_probability=0.0)
    env.reset(seed=0)
    observations = []
    for _ in range(30):
        env.reset(options={"map": ["SFFF", "FFFF", "FFFF", "FFFG"]})
        observations.append(env.step("right")[0])
    assert any("slipped" in obs for obs in observations)
    assert any("slipped" not in obs for obs in observations)


@pytest.mark.parametrize("junk", JUNK)
def test_junk_actions_are_invalid_and_change_nothing(junk):
    env = FrozenLakeEnv()
    _, info = env.reset(seed=1)
    obs, reward, terminated, truncated, after = env.step(junk)
    assert not after["action_valid"] and "Invalid action" in obs and len(obs) < 500
    assert after["anchor"] == info["anchor"] and reward == 0.0 and not terminated and not truncated


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    env = FrozenLakeEnv()
    _, info = env.reset(seed=2)
    obs, _, _, _, after = env.step(text)
    assert isinstance(obs, str)
    if text.strip().lower() not in ("up", "down", "left", "right"):
        assert not after["action_valid"] and after["anchor"] == info["anchor"]


@pytest.mark.parametrize("bad_map", [[], ["FFS", "FFG"], ["SFX", "FFG"], ["SF", "FFG"]])
def test_bad_hand_built_map_is_rejected(bad_map):
    with pytest.raises(ValueError, match="map"):
        FrozenLakeEnv().reset(options={"map": bad_map})


def test_registered_env_has_time_limit():
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    for step in range(1, 21):
        _, _, terminated, truncated, _ = env.step("???")
        assert not terminated and truncated == (step == 20)
