"""ScienceWorld on its official engine: seeds over tasks and split variations, score changes as
rewards, won and failed episodes, the parser's invalid actions, the engine's "which one?" question,
admissible lists, the gold path as expert (generated on first use), and the JVM's lifetime."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import gymnasium as gym
import pytest
from scienceworld_check import require_scienceworld

from lamina.envs import make
from lamina.envs.runner import EnvGroupRunner

TASKS = ["find-non-living-thing", "boil"]  # the shortest gold path (5 steps), and a long one


@pytest.fixture(scope="module")
def env() -> Iterator:
    """One engine (one JVM, about 2 s to start) for the module's tests."""
    require_scienceworld()
    env = make("scienceworld", tasks=TASKS)
    yield env.unwrapped
    env.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_arguments_are_checked():
    require_scienceworld()
    from lamina.envs.scienceworld import ScienceWorldEnv, task_names

    assert len(task_names()) == 30 and "boil" in task_names()
    with pytest.raises(ValueError, match="split 'valid'.*train, dev, test"):
        ScienceWorldEnv(split="valid")
    with pytest.raises(ValueError, match="java_heap='lots'"):
        ScienceWorldEnv(java_heap="lots")
    with pytest.raises(ValueError, match=r"unknown ScienceWorld tasks \['boill'\].*boil"):
        ScienceWorldEnv(tasks=["boill"])


def test_seeds_cycle_through_tasks_then_split_variations(env):
    assert gym.spec("lamina/ScienceWorld-v0").max_episode_steps == 50
    train = {task: env.variations(task) for task in TASKS}
    assert len(train["find-non-living-thing"]) == 150 and len(train["boil"]) == 14  # the engine's split
    played = []
    for seed in range(4):
        _, info = env.reset(seed=seed)
        played.append((info["task_type"], info["variation"]))
    assert played == [
        ("find-non-living-thing", train["find-non-living-thing"][0]),
        ("boil", train["boil"][0]),
        ("find-non-living-thing", train["find-non-living-thing"][1]),
        ("boil", train["boil"][1]),
    ]
    obs, info = env.reset(seed=1)
    assert (obs, info) == env.reset(seed=1)
    assert obs.startswith("Task Description:\nYour task is to boil water") and "This room is called" in obs
    assert info["task"].startswith("Your task is to boil water") and info["score"] == 0


def test_dev_variations_are_held_out(env):
    dev = make("scienceworld", tasks=["boil"], split="dev", admissible=False).unwrapped
    try:
        held_out = dev.variations("boil")
        assert len(held_out) == 7 and not set(env.variations("boil")) & set(held_out)
        _, info = dev.reset(seed=0)
        assert info["variation"] == held_out[0] and info["admissible_actions"] is None
    finally:
        dev.close()


def test_expert_wins_with_the_score_as_reward(env):
    _, info = env.reset(seed=0)  # find-non-living-thing
    rewards, scores = [], []
    while (action := env.expert_action()) is not None:
        _, reward, terminated, truncated, info = env.step(action)
        assert info["action_valid"], action
        rewards.append(reward)
        scores.append(info["score"])
        if terminated:
            break
    assert terminated and not truncated and info["won"] and scores[-1] == 100
    assert sum(rewards) == pytest.approx(1.0) and all(r >= 0 for r in rewards)
    assert [round(100 * r) for r in rewards] == [b - a for a, b in zip([0, *scores], scores, strict=False)]
    obs, reward, terminated, _, info = env.step("look around")  # over: invalid, nothing more
    assert terminated and reward == 0.0 and not info["action_valid"] and "over" in obs


def test_a_fatal_mistake_ends_the_episode_unwon(env):
    env.reset(seed=1)  # boil: focusing on anything but the water fails the task
    _, reward, terminated, _, info = env.step("focus on air")
    assert terminated and reward == -1.0 and info["score"] == -100 and not info["won"]


@pytest.mark.parametrize("action", ["dance with the moon", "", "x" * 1_001, "reset task", "ħ€ł ☃"])
def test_unreadable_and_refused_actions_change_nothing(env, action):
    _, before = env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(action)
    assert (reward, terminated, info["action_valid"]) == (0.0, False, False) and len(obs) < 300
    assert info["anchor"] == before["anchor"] and info["admissible_actions"] == before["admissible_actions"]
    assert "reset task" not in info["admissible_actions"]
    assert env.step("open door to kitchen")[4]["action_valid"]


def test_the_engine_s_question_takes_an_option_number(env):
    _, start = env.reset(seed=0)
    obs, _, _, _, asked = env.step("open door")  # six doors in the hallway: which one?
    assert obs.startswith("Ambiguous request") and asked["action_valid"]
    assert asked["admissible_actions"] == ["0", "1", "2", "3", "4", "5"]
    assert asked["anchor"][0] == start["anchor"][0] and asked["anchor"] != start["anchor"]  # no time passed
    obs, _, _, _, info = env.step("4")
    assert obs == "The door is now open." and info["action_valid"] and len(info["admissible_actions"]) > 6
    # Anything else cancels the question, by the engine's rule at the cost of one tick.
    env.step("open door")
    obs, _, terminated, _, info = env.step("dance")
    assert obs.startswith("Unknown action") and not info["action_valid"] and not terminated
    assert info["anchor"][1] == "" and len(info["admissible_actions"]) > 6


def test_expert_generated_mid_episode_replays_to_the_same_state(env):
    env.reset(seed=1)  # another variation first, so seed 0 is loaded without its gold path
    _, start = env.reset(seed=0)
    assert not env._gold_loaded
    env.step("dance")  # unreadable: skipped when matching the gold path
    _, _, _, _, info = env.step("open door to kitchen")
    expert = env.expert_action()  # reloads with the gold path and replays the episode
    assert env._gold_loaded and expert == "go to kitchen"
    assert env._anchor == info["anchor"]
    env.step("look around")  # understood and off the gold path: no expert any more
    assert env.expert_action() is None


def test_admissible_false_leaves_the_action_space_open():
    require_scienceworld()
    env = make("scienceworld", tasks=["find-non-living-thing"], admissible=False).unwrapped
    pid = env._engine._gateway.java_process.pid
    try:
        _, info = env.reset(seed=0)
        assert info["admissible_actions"] is None
        assert env.step("open door to kitchen")[4]["admissible_actions"] is None
    finally:
        env.close()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "close() leaves no JVM behind"


def test_runner_worker_plays_it():
    require_scienceworld()
    kwargs = {"tasks": ["find-non-living-thing"], "admissible": False}
    with EnvGroupRunner("scienceworld", 2, num_workers=1, env_kwargs=kwargs) as runner:
        observations, infos = runner.reset([0, 0])
        assert observations[0] == observations[1] and infos[0]["anchor"] == infos[1]["anchor"]
        assert runner.expert_actions() == ["open door to kitchen"] * 2
        _, rewards, _, _, infos = runner.step(["open door to kitchen", "dance"])
        assert rewards[0] > 0 and [i["action_valid"] for i in infos] == [True, False]


def test_without_java_a_one_line_error_says_what_to_install(monkeypatch):
    import lamina.envs.scienceworld as module

    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    with pytest.raises(module.JavaNotFoundError) as error:
        make("scienceworld")
    assert str(error.value) == (
        "ScienceWorld needs Java on PATH (a JRE 11+): apt-get install -y default-jre-headless"
    )
