"""Third-party environments: a package declaring ``lamina.envs`` entry points is found by lamina.

Builds a throwaway package in tmp_path, installs it into the running venv (``pip install --no-deps
--no-build-isolation``, no network), checks it from fresh interpreters (``lamina envs`` lists it,
``lamina.envs.make`` builds it, the conformance suite passes on it) and uninstalls it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # pip install + 4 fresh interpreters: ~20-30 s

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = "lamina-test-echo-room"
ENV_ID = "lamina/EchoRoom-v0"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{DISTRIBUTION}"
version = "0.0.1"

[tool.setuptools]
py-modules = ["echo_room"]

[project.entry-points."lamina.envs"]
"EchoRoom-v0" = "echo_room:EchoRoomEnv"
"""

ECHO_ROOM = '''
"""A room that wants to hear one word."""

from typing import Any

from lamina.envs import TextEnv, make_info

WORDS = ("hello", "echo", "lamina")


class EchoRoomEnv(TextEnv):
    """Say the word the room asks for: ``say <word>`` (any of three); ``listen`` repeats the request."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.word, self.won = WORDS[0], False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.word, self.won = WORDS[int(self.np_random.integers(len(WORDS)))], False
        self._last_observation = f"A quiet room. A voice whispers: say {self.word}."
        return self._last_observation, self._info(True)

    def step(self, action: str):
        command = action.strip().lower() if isinstance(action, str) else ""
        if self.won or command not in self._admissible():
            self._last_observation = "Nothing happens: try one of the admissible actions."
            return self._last_observation, 0.0, self.won, False, self._info(False)
        self.won = command == f"say {self.word}"
        self._last_observation = "The room echoes back: well said!" if self.won else f"Say {self.word}."
        return self._last_observation, float(self.won), self.won, False, self._info(True)

    def expert_action(self) -> str | None:
        return None if self.won else f"say {self.word}"

    def _admissible(self) -> list[str]:
        return [f"say {w}" for w in WORDS] + ["listen"]

    def _info(self, valid: bool) -> dict[str, Any]:
        return make_info(
            task="Say what the room asks for.",
            admissible_actions=[] if self.won else self._admissible(),
            anchor=(self.word, self.won),
            won=self.won,
            action_valid=valid,
        )
'''

MAKE_AND_PLAY = f"""
import lamina.envs
env = lamina.envs.make("{ENV_ID}")
obs, info = env.reset(seed=1)
obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
assert reward == 1.0 and terminated and info["won"], (obs, info)
print("won", type(env.unwrapped).__module__)
print(type(lamina.envs.make("echoroom").unwrapped).__module__)  # the short name resolves too
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``args`` in the repository, failing with its output if it fails."""
    done = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def echo_room_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The throwaway package, installed into the running venv for this module and uninstalled after."""
    package = tmp_path_factory.mktemp("echo_room_pkg")
    (package / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (package / "echo_room.py").write_text(ECHO_ROOM)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    try:
        run(*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", str(package))
        yield package
    finally:
        uninstall = [*pip, "uninstall", "--yes", "--quiet", DISTRIBUTION]
        subprocess.run(uninstall, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def envs_listing(echo_room_installed: Path) -> str:
    """What ``lamina envs`` prints, from a fresh interpreter, while the package is installed."""
    return run(sys.executable, "-m", "lamina.cli", "envs").stdout


def _row(listing: str) -> str:
    row = next((line for line in listing.splitlines() if line.startswith(ENV_ID)), None)
    assert row is not None, listing
    return row


def test_lamina_envs_lists_the_plugin(envs_listing: str) -> None:
    assert "echo_room:EchoRoomEnv" in _row(envs_listing)


def test_lamina_envs_shows_the_plugin_short_name(envs_listing: str) -> None:
    assert " echoroom " in _row(envs_listing)


def test_make_builds_and_plays_the_plugin(echo_room_installed: Path) -> None:
    assert run(sys.executable, "-c", MAKE_AND_PLAY).stdout.split() == ["won", "echo_room", "echo_room"]


def test_conformance_suite_passes_on_the_plugin(echo_room_installed: Path) -> None:
    conformance = run(
        sys.executable,
        "-m",
        "pytest",
        "tests/envs/test_conformance.py",
        "-k",
        "EchoRoom",
        "-q",
        "-p",
        "no:cacheprovider",
        env={"LAMINA_CONFORMANCE_IDS": ENV_ID},
    )
    summary = conformance.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "xfail" not in summary, summary
