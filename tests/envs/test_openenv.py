"""The OpenEnv adapter against a real openenv-core server on 127.0.0.1 (``openenv_server.py``):
protocol, seeds, rewards, won, invalid actions, and faults (a server killed mid-episode, a server
that stalls past the time limits) handled by the runner without hanging."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("openenv", reason="the OpenEnv tests need openenv-core (pip install openenv-core==0.3.0)")

from openenv_server import start_server, stop_server  # noqa: E402

from lamina.envs import make  # noqa: E402
from lamina.envs.openenv import OpenEnvEnv, http_url, text_field, websocket_url  # noqa: E402
from lamina.envs.runner import EnvGroupRunner, EnvWorkerError  # noqa: E402

GAME = {"admissible_field": "legal_actions", "won_field": "won", "task": "Find the secret number."}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server with the ``sleep <s>`` fault action, for this module."""
    url, process = start_server(faults=True)
    yield url
    stop_server(process)


def secret_of(env: OpenEnvEnv, seed: int) -> int:
    """Plays the game by binary search from ``seed``; returns the secret (the episode is then won)."""
    _, info = env.reset(seed=seed)
    while True:
        possible = info["admissible_actions"]
        _, reward, terminated, _, info = env.step(possible[len(possible) // 2])
        if terminated:
            assert reward == 1.0 and info["won"]
            return int(possible[len(possible) // 2])


def _fail_after(seconds: int) -> None:
    def on_alarm(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s: the fault was not handled")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ URLs, schema, arguments


def test_urls_and_arguments():
    assert websocket_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert websocket_url("https://host/prefix/") == "wss://host/prefix/ws"
    assert websocket_url("ws://host:1/ws") == "ws://host:1/ws"
    assert http_url("ws://host:1/ws", "schema") == "http://host:1/schema"
    with pytest.raises(ValueError, match="must look like http://host:port"):
        OpenEnvEnv(url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="needs env.kwargs.url"):
        OpenEnvEnv()
    with pytest.raises(ValueError, match="anchor='facts'.*observation, state"):
        OpenEnvEnv(url="http://h:1", anchor="facts")


def test_the_action_field_is_the_schema_s_one_string_field():
    schema = {"properties": {"metadata": {"type": "object"}, "guess": {"type": "string"}}}
    assert text_field(schema) == "guess"
    two = {"properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    with pytest.raises(ValueError, match=r"\['a', 'b'\].*set env.kwargs.action_field"):
        text_field(two)


# ------------------------------------------------------------------ playing


def test_registered_and_plays_a_whole_episode(server):
    env = make("openenv", url=server, **GAME)
    assert env.spec.id == "lamina/OpenEnv-v0" and env.spec.max_episode_steps == 50
    obs, info = env.reset(seed=3)
    assert env.unwrapped.action_field == "guess"  # read from GET /schema
    assert obs == "I picked a number from 1 to 8. Possible: 1..8."
    assert info["task"] == "Find the secret number." and info["admissible_actions"] == [
        str(n) for n in range(1, 9)
    ]
    assert (info["won"], info["action_valid"]) == (False, True)
    secret = secret_of(env.unwrapped, 3)
    obs, reward, terminated, _, info = env.step(str(secret))  # after the end: invalid, nothing changes
    assert terminated and reward == 0.0 and not info["action_valid"] and info["won"] and "over" in obs
    assert env.unwrapped.expert_action() is None
    env.close()


def test_same_seed_same_episode_on_separate_sessions(server):
    a, b = OpenEnvEnv(url=server, **GAME), OpenEnvEnv(url=server, **GAME)
    assert a.reset(seed=5) == b.reset(seed=5)
    assert a.step("4") == b.step("4")
    secrets = {secret_of(a, seed) for seed in range(8)}
    assert secret_of(b, 5) == secret_of(a, 5) and len(secrets) > 1
    a.reset()  # no seed: drawn from np_random, so a seeded env replays its unseeded resets too
    a.reset(seed=11)
    b.reset(seed=11)
    assert a.reset()[1]["anchor"] == b.reset()[1]["anchor"]
    a.close()
    b.close()


def test_reward_and_won_without_a_won_field(server):
    env = OpenEnvEnv(url=server, admissible_field="legal_actions")  # won: ended with reward >= 1
    assert secret_of(env, 2) >= 1
    picky = OpenEnvEnv(url=server, admissible_field="legal_actions", won_reward=2.0)
    _, info = picky.reset(seed=2)
    _, reward, terminated, _, info = picky.step(str(secret_of(env, 2)))
    assert (reward, terminated, info["won"], info["reward_raw"]) == (1.0, True, False, 1.0)
    env.close()
    picky.close()


@pytest.mark.parametrize(
    ("action", "server_says"),
    [("9", "not a number still possible"), ("", "not a number still possible"), ("x" * 10_001, "at most")],
)
def test_invalid_actions_change_nothing(server, action, server_says):
    env = OpenEnvEnv(url=server, anchor="state", **GAME)
    _, before = env.reset(seed=1)
    env.step("1" if before["admissible_actions"][0] != "1" else "2")  # leave the start state
    _, before = env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(action)
    assert (reward, terminated, truncated, info["action_valid"]) == (0.0, False, False, False)
    assert server_says in obs and len(obs) < 400
    assert {k: info[k] for k in ("anchor", "admissible_actions", "won", "task")} == {
        k: before[k] for k in ("anchor", "admissible_actions", "won", "task")
    }
    assert env.step(before["admissible_actions"][0])[4]["action_valid"]  # the session goes on
    env.close()


def test_an_action_failing_the_schema_is_invalid(server):
    env = OpenEnvEnv(url=server, action_field="number", **GAME)  # the server's action has no "number"
    env.reset(seed=0)
    obs, _, terminated, _, info = env.step("3")
    assert (
        not info["action_valid"] and not terminated and "VALIDATION_ERROR" in obs and "guess" in obs.lower()
    )
    env.close()


def test_anchors_from_the_observation_or_the_server_state(server):
    by_observation = OpenEnvEnv(url=server, **GAME)
    by_state = OpenEnvEnv(url=server, anchor="state", **GAME)
    _, seven = by_state.reset(seed=7)
    _, eight = by_state.reset(seed=8)
    assert '"secret"' in seven["anchor"] and "episode_id" not in seven["anchor"]
    # The observation is the same for every secret; the state is not.
    assert seven["anchor"] != eight["anchor"]
    assert by_observation.reset(seed=7)[1]["anchor"] == by_observation.reset(seed=8)[1]["anchor"]
    by_observation.close()
    by_state.close()


def test_reset_arguments_and_observation_fields(server):
    env = OpenEnvEnv(url=server, reset_kwargs={"high": 3}, observation_field="legal_actions")
    obs, info = env.reset(seed=0)
    assert obs == '["1","2","3"]' and info["task"] == obs and info["admissible_actions"] is None
    obs, _ = env.reset(seed=0, options={"high": 2})  # a reset's options go to the server too
    assert obs == '["1","2"]'
    env.close()


# ------------------------------------------------------------------ faults


def test_no_server_fails_fast_with_the_url():
    env = OpenEnvEnv(url=f"http://127.0.0.1:{_free_port()}", action_field="guess", connect_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"cannot reach the OpenEnv server at ws://127\.0\.0\.1"):
        env.reset(seed=0)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stalled_server_cuts_the_episode_within_the_request_timeout(server, num_workers):
    kwargs = {"url": server, "request_timeout_s": 1.0, **GAME}
    with EnvGroupRunner(
        "openenv", 2, num_workers=num_workers, env_kwargs=kwargs, step_timeout_s=60
    ) as runner:
        runner.reset([0, 1])
        start = time.monotonic()
        _fail_after(60)
        try:
            observations, rewards, terminated, truncated, infos = runner.step(["sleep 30", "1"])
        finally:
            signal.alarm(0)
        assert time.monotonic() - start < 20
        assert runner.restarts == 1 and truncated == [True, False] and not terminated[0]
        assert infos[0]["env_restarted"] and "TimeoutError" in infos[0]["env_error"]
        assert "cut short" in observations[0] and infos[1]["action_valid"]
        # The replacement opens a new session: the next batch plays normally.
        _, infos = runner.reset([0, 1])
        assert all(info["admissible_actions"] for info in infos)
        assert runner.step(["1", "1"])[4][0]["action_valid"]


def test_the_runner_s_step_timeout_still_backs_a_patient_adapter(server):
    kwargs = {"url": server, "request_timeout_s": 120.0, **GAME}
    with EnvGroupRunner("openenv", 1, num_workers=1, env_kwargs=kwargs, step_timeout_s=2.0) as runner:
        runner.reset([0])
        _fail_after(60)
        try:
            _, _, _, truncated, infos = runner.step(["sleep 30"])
        finally:
            signal.alarm(0)
        assert truncated == [True] and infos[0]["worker_restarted"] and runner.restarts == 1


def test_a_server_killed_mid_episode_cuts_it_and_a_restarted_one_is_used():
    """In-process (the default ``rollout.env_workers=0``); workers take the same path (``EnvFault``)."""
    port = _free_port()
    url, process = start_server(port=port)
    kwargs = {"url": url, "request_timeout_s": 5.0, "connect_timeout_s": 1.0, **GAME}
    try:
        with EnvGroupRunner("openenv", 2, num_workers=0, env_kwargs=kwargs) as runner:
            runner.reset([0, 1])
            runner.step(["1", "1"])
            os.kill(process.pid, signal.SIGKILL)
            stop_server(process)  # reaps it
            _fail_after(60)
            try:
                observations, _, terminated, truncated, infos = runner.step(["2", "2"])
            finally:
                signal.alarm(0)
            assert truncated == [True, True] and terminated == [False, False] and runner.restarts == 2
            assert all(i["env_restarted"] and "ConnectionError" in i["env_error"] for i in infos)
            # While it is down, a reset fails (a caller's error), quickly and naming the server.
            with pytest.raises((ConnectionError, EnvWorkerError), match="cannot reach the OpenEnv server"):
                runner.reset([0, 1])
            url, process = start_server(port=port)  # back where it was
            observations, infos = runner.reset([0, 1])
            assert observations[0].startswith("I picked a number") and infos[1]["admissible_actions"]
    finally:
        stop_server(process)
