"""A real OpenEnv server for the tests: a guess-the-number game on openenv-core's own server classes.

    python tests/envs/openenv_server.py --parent-pid 123 [--faults]   # prints "PORT <n>", serves

The game (``GuessEnvironment``, an ``openenv.core`` ``Environment``): find a secret integer in
1..``high`` (``high`` a reset argument, default 8; the secret drawn from ``random.Random(seed)``).
Action ``GuessAction(guess: str)``; observation ``GuessObservation(text, legal_actions, won)``:
``legal_actions`` are the numbers still possible. A guess that is not one of them raises
``ValueError`` in ``step`` (the server answers with an ``EXECUTION_ERROR``). Finding the secret
ends the episode with reward 1. ``state`` carries the secret and the bounds.

``--faults`` adds ``sleep <seconds>`` (the step blocks that long, then is a no-op) for timeout tests.

The server binds 127.0.0.1 only, on a free port it prints first, and stops by itself: when its
parent process is gone (checked twice a second) or after ``--lifetime`` seconds (default 600).
``start_server()`` starts one from a test and waits for its ``/health``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0


def start_server(
    faults: bool = False, port: int = 0, lifetime_s: float = 600.0
) -> tuple[str, subprocess.Popen]:
    """Starts the server in a subprocess; returns its ``http://127.0.0.1:<port>`` URL and process.

    Args:
        faults: serve the ``sleep <seconds>`` action.
        port: 0 for a free one; a given port lets a test restart a server where the last one was.
        lifetime_s: the server exits by itself after this long.

    The caller should ``stop_server()`` it; it also stops by itself when this process ends.
    """
    command = [sys.executable, __file__, "--parent-pid", str(os.getpid()), "--lifetime", str(lifetime_s)]
    command += ["--port", str(port), *(["--faults"] if faults else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # "PORT <n>" once the socket is bound
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the OpenEnv test server did not start (said {line!r})")
    url = f"http://{HOST}:{int(line.split()[1])}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return url, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the OpenEnv test server at {url} never became healthy") from None
            time.sleep(0.2)


_SHARED: dict[str, Any] = {}


def shared_server() -> str:
    """The URL of one server (no faults) shared by every test of this process, started on first use;
    stopped at exit (and by itself when this process is gone). Skips the test without openenv-core."""
    import atexit

    import pytest

    pytest.importorskip(
        "openenv", reason="the OpenEnv tests need openenv-core (pip install openenv-core==0.3.0)"
    )
    if "url" not in _SHARED:
        url, process = start_server()
        atexit.register(stop_server, process)
        _SHARED["url"] = url
    return _SHARED["url"]


def stop_server(process: subprocess.Popen) -> None:
    """Terminates the server (SIGTERM, then SIGKILL after 2 s: a step may still sleep) and reaps it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process.stdout is not None:
        process.stdout.close()


def build_app(faults: bool) -> Any:
    """The FastAPI app serving ``GuessEnvironment`` through openenv-core's ``create_fastapi_app``."""
    from openenv.core.env_server.http_server import create_fastapi_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State
    from pydantic import Field

    class GuessAction(Action):
        guess: str = Field(..., description="a number still possible")

    class GuessObservation(Observation):
        text: str = Field(default="", description="what happened")
        legal_actions: list[str] = Field(default_factory=list, description="the numbers still possible")
        won: bool = Field(default=False, description="whether the secret was found")

    class GuessEnvironment(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            super().__init__()
            self._state = State(episode_id=None, step_count=0)
            self.secret, self.low, self.top, self.found = 1, 1, 8, False

        def reset(
            self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any
        ) -> GuessObservation:
            high = int(kwargs.get("high", 8))
            self.secret = random.Random(seed).randint(1, high)
            self.low, self.top, self.found = 1, high, False
            self._state = State(episode_id=episode_id, step_count=0)
            return self._observe(f"I picked a number from 1 to {high}.", reward=0.0)

        def step(
            self, action: GuessAction, timeout_s: float | None = None, **kwargs: Any
        ) -> GuessObservation:
            guess = action.guess.strip()
            if faults and guess.startswith("sleep "):
                time.sleep(float(guess.split()[1]))
                return self._observe("Slept.", reward=0.0)
            if guess not in self._legal():
                raise ValueError(f"{guess[:20]!r} is not a number still possible")
            number = int(guess)
            self._state.step_count += 1
            self.found = number == self.secret
            if number < self.secret:
                self.low = number + 1
            elif number > self.secret:
                self.top = number - 1
            hint = "Found it!" if self.found else ("Higher." if number < self.secret else "Lower.")
            return self._observe(hint, reward=1.0 if self.found else 0.0)

        @property
        def state(self) -> State:
            return State(
                episode_id=self._state.episode_id,
                step_count=self._state.step_count,
                secret=self.secret,
                low=self.low,
                top=self.top,
                found=self.found,
            )

        def _legal(self) -> list[str]:
            return [] if self.found else [str(n) for n in range(self.low, self.top + 1)]

        def _observe(self, text: str, reward: float) -> GuessObservation:
            return GuessObservation(
                text=f"{text} Possible: {self.low}..{self.top}.",
                legal_actions=self._legal(),
                won=self.found,
                done=self.found,
                reward=reward,
            )

    return create_fastapi_app(GuessEnvironment, GuessAction, GuessObservation, max_concurrent_envs=64)


def _exit_with_parent(parent_pid: int, lifetime_s: float) -> None:
    def watch() -> None:
        deadline = time.monotonic() + lifetime_s
        while os.getppid() == parent_pid and time.monotonic() < deadline:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    _exit_with_parent(args.parent_pid, args.lifetime)

    import uvicorn

    app = build_app(args.faults)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="critical", ws_ping_interval=None)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
