import random

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.envs.frozenlake import ACTIONS, FrozenLakeEnv
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


@pytest.mark.parametrize("bad_map", [[], ["FFF", "FFG"], ["SFS", "FFG"], ["SFX", "FFG"], ["SF", "FFG"]])
def test_bad_hand_built_map_is_rejected(bad_map):
    with pytest.raises(ValueError, match="map"):
        FrozenLakeEnv().reset(options={"map": bad_map})


def test_registered_env_has_time_limit():
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    for step in range(1, 21):
        _, _, terminated, truncated, _ = env.step("???")
        assert not terminated and truncated == (step == 20)


# --------------------------------------------------------------------------- RAGEN's FrozenLake


def ragen_generate_random_map(size, p, seed):
    """Oracle: RAGEN's ``ragen/env/frozen_lake/utils.py`` ``generate_random_map`` and ``is_valid``."""
    import numpy as np
    from gymnasium.utils import seeding

    def is_valid(board, max_size):
        frontier, discovered = [], set()
        start_r, start_c = np.where(np.array(board) == "S")
        frontier.append((start_r[0], start_c[0]))
        while frontier:
            r, c = frontier.pop()
            if (r, c) not in discovered:
                discovered.add((r, c))
                for dr, dc in [(1, 0), (0, 1), (-1, 0), (0, -1)]:
                    r_new, c_new = r + dr, c + dc
                    if 0 <= r_new < max_size and 0 <= c_new < max_size:
                        if board[r_new][c_new] == "G":
                            return True
                        if board[r_new][c_new] != "H":
                            frontier.append((r_new, c_new))
        return False

    np_random, _ = seeding.np_random(seed)
    while True:
        board = np_random.choice(["F", "H"], (size, size), p=[p, 1 - p])
        start_r, start_c = np_random.integers(size, size=2)
        goal_r, goal_c = np_random.integers(size, size=2)
        if (start_r, start_c) != (goal_r, goal_c):
            board[start_r][start_c], board[goal_r][goal_c] = "S", "G"
            if is_valid(board, size):
                break
    return ["".join(row) for row in board]


RAGEN = {"is_slippery": True, "random_start_goal": True, "symbols": "ragen"}


def test_ragen_maps_are_ragens():
    env = FrozenLakeEnv(**RAGEN)
    starts = set()
    for seed in range(40):
        env.reset(seed=seed)
        letters = ragen_generate_random_map(4, 0.8, seed)
        assert env._map == ["".join({"S": "_", "F": "_"}.get(c, c) for c in row) for row in letters]
        start = "".join(letters).index("S")
        assert env._position == divmod(start, 4)
        starts.add(env._position)
    assert len(starts) > 5  # start anywhere, not only the top-left corner


def test_ragen_slippery_walk_equals_gymnasiums_frozenlake():
    from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv as GymFrozenLake

    gym_action = {"left": 0, "down": 1, "right": 2, "up": 3}
    rng = random.Random(0)
    compared = 0
    for seed in range(25):
        ours = FrozenLakeEnv(**RAGEN)
        ours.reset(seed=seed)
        theirs = GymFrozenLake(desc=ragen_generate_random_map(4, 0.8, seed), is_slippery=True)
        state, _ = theirs.reset(seed=seed)
        for _ in range(30):
            move = rng.choice(ACTIONS)
            _, reward, terminated, _, _ = ours.step(move)
            state, gym_reward, gym_terminated, _, _ = theirs.step(gym_action[move])
            assert ours._position == divmod(int(state), 4), (seed, move)
            assert (reward, terminated) == (float(gym_reward), gym_terminated)
            compared += 1
            if terminated:
                break
    assert compared > 100


def test_ragen_symbols():
    env = FrozenLakeEnv(symbols="ragen")
    obs, info = env.reset(options={"map": ["SFH", "FFG"]})
    assert obs == "P_O\n__G" and "O hole" in info["task"] and "√ you on the goal" in info["task"]
    obs, *_ = env.step("right")
    obs, *_ = env.step("right")
    assert obs.endswith("__X\n__G")  # player in a hole
    env.reset(options={"map": ["SFH", "FFG"]})
    env.step("down")
    env.step("right")
    obs, reward, terminated, _, info = env.step("right")
    assert obs.endswith("__O\n__√") and reward == 1.0 and terminated and info["won"]
    with pytest.raises(ValueError, match="symbols='emoji'"):
        FrozenLakeEnv(symbols="emoji")


def test_default_is_unchanged_corner_start():
    env = FrozenLakeEnv()
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        assert obs.startswith("P") and obs.endswith("G") and env._position == (0, 0)
