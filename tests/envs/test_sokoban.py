import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.envs.registry import register
from lamina.envs.sokoban import SokobanEnv, parse_room

ENV_ID = register("Sokoban-v0", "lamina.envs.sokoban:SokobanEnv", short_name="sokoban", max_episode_steps=20)

# A box left of its target, a box already on a target below it, a third box away from its target.
THREE_BOXES = """
#######
#_PXO_#
#__*__#
#_X_O_#
#######
"""
JUNK = ["", " ", "UP!", "go up", "<action><think>", "x" * 100_000, "ħ€ł☃", "up\ndown", "\x00", "upup"]


def run_expert(env: SokobanEnv, limit: int = 100) -> tuple[list[float], dict]:
    rewards, info = [], {}
    while (action := env.expert_action()) is not None and len(rewards) < limit:
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
        if terminated:
            break
    return rewards, info


def test_check_env():
    check_env(SokobanEnv())


def test_expert_solves_generated_rooms_within_max_steps():
    env = SokobanEnv()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert not info["won"]
        rewards, info = run_expert(env)
        assert info["won"], seed
        assert env.min_solution_length <= len(rewards) <= env.solution_limit
        assert rewards[-1] == pytest.approx(-0.1 + 1 + 10)
        assert env.expert_action() is None


def test_expert_solves_two_box_rooms():
    env = SokobanEnv(dim_room=(7, 7), num_boxes=2)
    for seed in range(5):
        env.reset(seed=seed)
        rewards, info = run_expert(env)
        assert info["won"] and len(rewards) <= env.solution_limit


def test_expert_replans_after_detour():
    env = SokobanEnv()
    for seed in range(5):
        env.reset(seed=seed)
        planned = env.expert_action()
        for move in ["up", "down", "left", "right"]:  # a plain walk off the plan keeps it solvable
            if move != planned:
                obs, _, _, _, _ = env.step(move)
                if "You moved" in obs:
                    break
        _, info = run_expert(env)
        assert info["won"], seed


def test_expert_gives_up_on_deadlock():
    env = SokobanEnv()
    env.reset(options={"room": "######\n#XP_O#\n######"})  # box stuck in a corner
    assert env.expert_action() is None


def test_reset_is_deterministic_by_seed():
    first, second = SokobanEnv(), SokobanEnv()
    moves = ["up", "left", "down", "right", "left", "up"]
    for seed in range(5):
        assert first.reset(seed=seed) == second.reset(seed=seed)
        for move in moves:
            assert first.step(move) == second.step(move)
    rooms = {SokobanEnv().reset(seed=seed)[0] for seed in range(10)}
    assert len(rooms) > 5


def test_rewards_on_hand_built_room():
    env = SokobanEnv()
    obs, info = env.reset(options={"room": THREE_BOXES})
    assert obs == THREE_BOXES.strip() and info["anchor"] == obs
    assert info["admissible_actions"] == ["up", "down", "left", "right"]

    obs, reward, terminated, _, info = env.step("up")  # into a wall: valid, no effect
    assert reward == pytest.approx(-0.1) and info["action_valid"] and "wall" in obs
    assert info["anchor"] == THREE_BOXES.strip() and not terminated

    obs, reward, terminated, _, info = env.step(" Right ")  # box onto its target, one box left
    assert reward == pytest.approx(-0.1 + 1) and not terminated and not info["won"]
    assert "#__PX*#" not in obs and "#__P*_#" in obs

    env.step("left")
    env.step("down")  # now left of the box on a target: push it off
    obs, reward, terminated, _, info = env.step("right")
    assert reward == pytest.approx(-0.1 - 1) and "off a target" in obs
    assert info["anchor"].splitlines()[2] == "#__SX_#"


def test_solving_reward_and_termination():
    env = SokobanEnv()
    env.reset(options={"room": "#####\n#PXO#\n#####"})
    _, reward, terminated, truncated, info = env.step("right")
    assert reward == pytest.approx(-0.1 + 1 + 10)
    assert terminated and not truncated and info["won"]


def test_push_into_wall_or_box_is_a_no_op():
    env = SokobanEnv()
    _, info = env.reset(options={"room": "######\n#PXX_#\n#_OO_#\n######"})
    obs, reward, _, _, after = env.step("right")
    assert after["action_valid"] and after["anchor"] == info["anchor"] and "blocked" in obs
    assert reward == pytest.approx(-0.1)


@pytest.mark.parametrize("junk", JUNK)
def test_junk_actions_are_invalid_and_change_nothing(junk):
    env = SokobanEnv()
    _, info = env.reset(seed=1)
    obs, reward, terminated, truncated, after = env.step(junk)
    assert not after["action_valid"] and "Invalid action" in obs and len(obs) < 500
    assert after["anchor"] == info["anchor"] and not terminated and not truncated
    assert reward == pytest.approx(-0.1)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    env = SokobanEnv()
    _, info = env.reset(seed=2)
    obs, _, _, _, after = env.step(text)
    assert isinstance(obs, str)
    if text.strip().lower() not in ("up", "down", "left", "right"):
        assert not after["action_valid"] and after["anchor"] == info["anchor"]


@pytest.mark.parametrize(
    "grid",
    ["", "#####\n#P_X#\n#####", "#####\n#PXO_\n#####", "#####\n#PXO#\n####", "#####\n#PXOP#\n######"],
)
def test_parse_room_rejects_bad_rooms(grid):
    with pytest.raises(ValueError, match="room"):
        parse_room(grid)


def test_registered_env_has_time_limit():
    env = gym.make(ENV_ID)
    _, info = env.reset(seed=0)
    for step in range(1, 21):
        _, _, terminated, truncated, info = env.step("nonsense")
        assert not terminated and truncated == (step == 20)


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="dim_room"):
        SokobanEnv(dim_room=(4, 6))
    with pytest.raises(ValueError, match="min_solution_length"):
        SokobanEnv(max_steps=3, min_solution_length=4)


# --------------------------------------------------------------------------- step limit, RAGEN options


def test_room_generation_follows_the_episode_step_limit():
    import lamina.envs

    assert SokobanEnv().solution_limit == 20
    assert SokobanEnv(max_steps=12).solution_limit == 12
    env = lamina.envs.make("sokoban", max_episode_steps=6, min_solution_length=2)
    assert env.unwrapped.solution_limit == 6
    lengths = []
    for seed in range(15):
        env.reset(seed=seed)
        rewards, info = run_expert(env.unwrapped)
        assert info["won"] and 2 <= len(rewards) <= 6
        lengths.append(len(rewards))
    long = lamina.envs.make("sokoban", max_episode_steps=60, min_solution_length=21, dim_room=(7, 7))
    long.reset(seed=0)
    rewards, info = run_expert(long.unwrapped)
    assert info["won"] and 21 <= len(rewards) <= 60  # beyond the old fixed 20


@pytest.mark.parametrize("num_boxes", [1, 2])
def test_gym_sokoban_generator_rooms(num_boxes):
    env = SokobanEnv(generator="gym_sokoban", num_boxes=num_boxes, dim_room=(7, 7))
    grids = set()
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        assert (
            obs
            == SokobanEnv(generator="gym_sokoban", num_boxes=num_boxes, dim_room=(7, 7)).reset(seed=seed)[0]
        )
        grids.add(obs)
        assert obs.count("X") == num_boxes and obs.count("O") + obs.count("S") == num_boxes
        assert "*" not in obs  # reverse play keeps the state where no box is on a target
        rows = obs.splitlines()
        assert set(rows[0]) == set(rows[-1]) == {"#"} and len(rows) == 7
        rewards, info = run_expert(env, limit=200)
        assert info["won"], seed
    assert len(grids) >= 10


def test_ragen_symbols_and_bad_options():
    env = SokobanEnv(symbols="ragen")
    obs, info = env.reset(options={"room": "#####\n#P*O#\n#_X_#\n#####"})
    assert obs.splitlines()[1] == " #  P  √  O  # "
    assert obs.splitlines()[2] == " #  _  X  _  # "
    assert info["anchor"] == obs
    with pytest.raises(ValueError, match="generator='boxoban'"):
        SokobanEnv(generator="boxoban")
    with pytest.raises(ValueError, match="symbols='emoji'"):
        SokobanEnv(symbols="emoji")


def test_default_rooms_are_unchanged_by_the_new_options():
    for seed in range(5):
        assert SokobanEnv().reset(seed=seed) == SokobanEnv(max_steps=20).reset(seed=seed)


def test_a_short_step_limit_lowers_the_minimum_solution_length():
    import lamina.envs

    env = lamina.envs.make("sokoban", max_episode_steps=2)
    for seed in range(5):
        env.reset(seed=seed)
        rewards, info = run_expert(env.unwrapped)
        assert info["won"] and 1 <= len(rewards) <= 2
    with pytest.raises(ValueError, match="min_solution_length"):
        SokobanEnv(max_steps=3, min_solution_length=4)
