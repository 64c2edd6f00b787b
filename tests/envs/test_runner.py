"""EnvGroupRunner: same results as stepping the envs in-process, survives killed and hung workers."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal

import pytest

import lamina.envs
from lamina.envs.runner import EnvConstructionError, EnvGroupRunner, EnvWorkerError

# (env name, constructor kwargs): quick procedural environments.
QUICK_ENVS = [
    ("sokoban", {}),
    ("frozenlake", {}),
    ("webshop", {"catalog": "procedural", "num_products": 200}),
]


def _random_action(rng: random.Random, info: dict) -> str:
    return rng.choice(info["admissible_actions"])  # WebShop lists concrete candidate searches


def play_reference(env_name: str, env_kwargs: dict, seeds: list[int], steps: int, rng_seed: int):
    """The oracle: the same envs stepped one by one in this process, with the runner's action rule.

    Returns every (reset or step) result and the actions taken, so the runner can replay them.
    """
    envs = [lamina.envs.make(env_name, **env_kwargs) for _ in seeds]
    rng = random.Random(rng_seed)
    resets = [env.reset(seed=seed) for env, seed in zip(envs, seeds, strict=True)]
    infos = [info for _, info in resets]
    done = [False] * len(envs)
    trace: list[tuple[list[str | None], list[tuple]]] = []
    for _ in range(steps):
        actions = [None if d else _random_action(rng, info) for d, info in zip(done, infos, strict=True)]
        results = []
        for i, (env, action) in enumerate(zip(envs, actions, strict=True)):
            if action is None:
                results.append(None)
                continue
            observation, reward, terminated, truncated, infos[i] = env.step(action)
            done[i] = terminated or truncated
            results.append((observation, float(reward), terminated, truncated, infos[i]))
        trace.append((actions, results))
    experts = [env.unwrapped.expert_action() for env in envs]
    for env in envs:
        env.close()
    return resets, trace, experts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(("env_name", "env_kwargs"), QUICK_ENVS)
def test_runner_matches_in_process_envs(env_name: str, env_kwargs: dict, num_workers: int):
    seeds = [3, 3, 3, 8, 8]  # two groups (G = 3 and 2) over 2 workers of unequal size
    resets, trace, experts = play_reference(env_name, env_kwargs, seeds, steps=12, rng_seed=1)
    with EnvGroupRunner(env_name, len(seeds), num_workers=num_workers, env_kwargs=env_kwargs) as runner:
        observations, infos = runner.reset(seeds)
        assert list(zip(observations, infos, strict=True)) == resets
        last = [(obs, 0.0, False, False, info) for obs, info in resets]
        for actions, expected in trace:
            got = list(zip(*runner.step(actions), strict=True))
            for i, result in enumerate(expected):
                if result is None:  # skipped: last observation and info, reward 0, previous flags
                    result = (last[i][0], 0.0, last[i][2], last[i][3], last[i][4])
                assert got[i] == result, f"env {i}, actions {actions}"
                last[i] = result
        assert runner.expert_actions() == experts
        assert runner.restarts == 0


def test_killed_worker_cuts_its_episodes_and_is_restarted():
    seeds = [0, 0, 1, 1]
    with EnvGroupRunner("sokoban", 4, num_workers=2, step_timeout_s=30) as runner:
        runner.reset(seeds)
        runner.step(["up"] * 4)
        old_pid = runner.worker_pids[0]
        os.kill(old_pid, signal.SIGKILL)
        observations, rewards, terminated, truncated, infos = runner.step(["down"] * 4)

        assert runner.restarts == 1
        assert runner.worker_pids[0] != old_pid and not _alive(old_pid)
        for i in (0, 1):  # worker 0's episodes: cut
            assert truncated[i] and not terminated[i] and rewards[i] == 0.0
            assert infos[i]["worker_restarted"] is True
            assert "cut short" in observations[i]
        for i in (2, 3):  # worker 1's episodes: untouched
            assert not truncated[i] and "worker_restarted" not in infos[i]
        # Until the next reset, a cut episode keeps returning its cut result.
        assert runner.step(["left"] * 4)[3][:2] == [True, True]
        assert runner.expert_actions()[:2] == [None, None]

        # The next batch plays normally, and exactly as in-process envs would.
        resets, trace, _ = play_reference("sokoban", {}, seeds, steps=5, rng_seed=2)
        observations, infos = runner.reset(seeds)
        assert list(zip(observations, infos, strict=True)) == resets
        for actions, expected in trace:
            got = list(zip(*runner.step(actions), strict=True))
            assert [g for g, e in zip(got, expected, strict=True) if e is not None] == [
                e for e in expected if e is not None
            ]
        assert runner.restarts == 1


def test_hung_worker_times_out_and_is_restarted():
    with EnvGroupRunner("frozenlake", 2, num_workers=2, step_timeout_s=1.0) as runner:
        runner.reset([0, 1])
        os.kill(runner.worker_pids[1], signal.SIGSTOP)  # hangs without dying
        _, _, _, truncated, infos = runner.step(["right", "right"])
        assert runner.restarts == 1
        assert truncated[1] and infos[1]["worker_restarted"]
        assert infos[0].get("worker_restarted") is None
        runner.reset([0, 1])
        assert runner.step(["down", "down"])[3] == [False, False]


def test_worker_killed_between_calls_is_restarted_at_reset():
    with EnvGroupRunner("frozenlake", 2, num_workers=2) as runner:
        runner.reset([0, 1])
        os.kill(runner.worker_pids[0], signal.SIGKILL)
        observations, _ = runner.reset([0, 1])
        assert runner.restarts == 1
        assert observations[0] == lamina.envs.make("frozenlake").reset(seed=0)[0]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_constructor_error_is_raised_with_env_name(num_workers: int):
    with pytest.raises(EnvConstructionError, match=r"Sokoban-v0.*dim_room.*at least"):
        EnvGroupRunner("sokoban", 2, num_workers=num_workers, env_kwargs={"dim_room": (3, 3)})
    with pytest.raises(EnvConstructionError, match=r"FrozenLake-v0.*TypeError.*colour"):
        EnvGroupRunner("frozenlake", 2, num_workers=num_workers, env_kwargs={"colour": "blue"})
    assert mp.active_children() == []


def test_unknown_env_name_fails_before_starting_workers():
    with pytest.raises(ValueError, match="unknown environment"):
        EnvGroupRunner("no-such-env", 2, num_workers=2)


def test_close_leaves_no_child_processes():
    runner = EnvGroupRunner("frozenlake", 3, num_workers=3)
    pids = runner.worker_pids
    assert len(pids) == 3 and all(_alive(pid) for pid in pids)
    runner.reset([0, 1, 2])
    runner.close()
    runner.close()  # idempotent
    assert not any(_alive(pid) for pid in pids)
    assert mp.active_children() == []
    with pytest.raises(RuntimeError, match="closed"):
        runner.step(["up"] * 3)


def test_env_error_in_worker_is_raised_and_the_runner_goes_on():
    with EnvGroupRunner("frozenlake", 2, num_workers=2) as runner:
        with pytest.raises(EnvWorkerError, match=r"(?s)FrozenLake-v0.*ValueError.*a map is.*Traceback"):
            runner.reset([0, 1], options=[None, {"map": ["FFF", "FFG"]}])  # no start cell
        observations, _ = runner.reset([0, 1], options=[None, {"map": ["SFF", "FFG"]}])
        assert observations[1] == "P__\n__G"
        assert runner.restarts == 0
