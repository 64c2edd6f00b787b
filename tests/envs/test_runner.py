"""EnvGroupRunner: same results as stepping the envs in-process, survives killed and hung workers."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# --------------------------------------------------------------------------- injected faults


@pytest.fixture
def faulty_env_id():
    """Registers the faulty test environment; workers register it from its entry point themselves."""
    import gymnasium as gym
    from faulty_env import ENV_ID

    lamina.envs.register(ENV_ID.split("/")[1], "faulty_env:FaultyEnv")
    yield ENV_ID
    gym.registry.pop(ENV_ID, None)


def _fail_after(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"runner.step still blocked after {seconds} s: no step timeout")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)


def test_env_step_that_hangs_hits_the_step_timeout(faulty_env_id):
    with EnvGroupRunner(faulty_env_id, 4, num_workers=2, step_timeout_s=1.0) as runner:
        runner.reset([0, 1, 2, 3])
        start = time.monotonic()
        _fail_after(60)  # without the protection the test fails instead of hanging for an hour
        try:
            observations, rewards, _, truncated, infos = runner.step(["hang", "ok", "ok", "ok"])
        finally:
            signal.alarm(0)
        assert time.monotonic() - start < 30
        assert runner.restarts == 1
        assert (
            truncated[:2] == [True, True] and infos[0]["worker_restarted"] and "cut short" in observations[0]
        )
        assert truncated[2:] == [False, False] and rewards[2:] == [1.0, 1.0]
        observations, _ = runner.reset([0, 1, 2, 3])
        assert observations[0] == "seed 0, step 0"
        assert runner.step(["ok"] * 4)[1] == [1.0] * 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_env_that_raises_is_restarted_and_only_its_episode_cut(faulty_env_id, num_workers):
    with EnvGroupRunner(faulty_env_id, 4, num_workers=num_workers) as runner:
        runner.reset([0, 1, 2, 3])
        observations, rewards, terminated, truncated, infos = runner.step(["raise", "ok", "ok", "ok"])
        assert runner.restarts == 1
        assert truncated == [True, False, False, False] and not any(terminated)
        assert infos[0]["env_restarted"] and "RuntimeError: boom" in infos[0]["env_error"]
        assert "Traceback" in infos[0]["env_error"] and "cut short" in observations[0]
        assert infos[0]["action_valid"] is True  # not the agent's fault: no invalid-action penalty
        assert rewards == [0.0, 1.0, 1.0, 1.0] and observations[1] == "seed 1, step 1"
        assert runner.step([None, "ok", "ok", "ok"])[0][1] == "seed 1, step 2"  # env 1 kept its episode
        assert runner.step(["ok"] * 4)[3][0] is True  # env 0 stays cut until the next reset
        observations, _ = runner.reset([5, 1, 2, 3])
        assert observations[0] == "seed 5, step 0" and runner.step(["ok"] * 4)[1] == [1.0] * 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_env_left_broken_by_its_exception_is_replaced(faulty_env_id, num_workers):
    """The copy whose step raised is thrown away: kept, it would raise again at the next reset."""
    with EnvGroupRunner(faulty_env_id, 2, num_workers=num_workers) as runner:
        runner.reset([0, 1])
        assert runner.step(["break", "ok"])[3] == [True, False]
        observations, _ = runner.reset([0, 1])
        assert observations[0] == "seed 0, step 0" and runner.step(["ok", "ok"])[1] == [1.0, 1.0]


def test_call_interrupted_midway_leaves_no_stale_reply(faulty_env_id, monkeypatch):
    import lamina.envs.runner as runner_module

    with EnvGroupRunner(faulty_env_id, 4, num_workers=2) as runner:
        runner.reset([0, 1, 2, 3])
        real_wait = runner_module.wait
        calls = {"n": 0}

        def interrupted_wait(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyboardInterrupt  # after every worker got the step, before any reply is read
            return real_wait(*args, **kwargs)

        monkeypatch.setattr(runner_module, "wait", interrupted_wait)
        with pytest.raises(KeyboardInterrupt):
            runner.step(["ok"] * 4)
        # The step replies are still in the pipes; the reset must read its own replies, not them.
        observations, infos = runner.reset([7, 8, 9, 10])
        assert observations == [f"seed {s}, step 0" for s in (7, 8, 9, 10)]
        assert runner.step(["ok"] * 4)[0] == [f"seed {s}, step 1" for s in (7, 8, 9, 10)]
        assert runner.restarts == 0


def test_expert_time_limit_is_per_environment(faulty_env_id):
    env_kwargs = {"expert_delay_s": 0.0}
    with EnvGroupRunner(
        faulty_env_id, 2, num_workers=1, env_kwargs=env_kwargs, expert_timeout_s=0.5
    ) as runner:
        runner.reset([0, 1])
        assert runner.expert_actions() == ["ok", "ok"]
    slow = {"expert_delay_s": 30.0}
    with EnvGroupRunner(faulty_env_id, 2, num_workers=1, env_kwargs=slow, expert_timeout_s=0.5) as runner:
        runner.reset([0, 1])
        start = time.monotonic()
        assert runner.expert_actions() == [None, None]  # each gave up after 0.5 s; the worker lives
        assert time.monotonic() - start < 10 and runner.restarts == 0
        assert runner.step(["ok", "ok"])[1] == [1.0, 1.0]


def test_workers_die_with_a_killed_parent(tmp_path):
    """The parent is SIGKILLed while its workers are busy in a hanging step (no pipe EOF reaches a
    worker that is not reading): only the parent watch ends them."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import lamina.envs\n"
        "from lamina.envs.runner import EnvGroupRunner\n"
        "if __name__ == '__main__':\n"
        "    lamina.envs.register('FaultyTest-v0', 'faulty_env:FaultyEnv')\n"
        "    runner = EnvGroupRunner('lamina/FaultyTest-v0', 2, num_workers=2, step_timeout_s=600)\n"
        "    runner.reset([0, 1])\n"
        "    print(*runner.worker_pids, flush=True)\n"
        "    runner.step(['hang', 'hang'])\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        time.sleep(1.0)  # the workers are now sleeping inside step("hang")
        parent.kill()  # SIGKILL: no cleanup runs in the parent
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        parent.kill()
