"""Every registered lamina environment against the text-environment contract (``lamina.envs.base``).

    pytest tests/envs/test_conformance.py
    LAMINA_CONFORMANCE_IDS=lamina/MyMaze-v0 pytest tests/envs/test_conformance.py   # a plugin too

The suite is parametrized over ``lamina.envs.registered_envs()``, so a newly registered environment
is covered without touching this file. Ids whose entry point lives outside ``lamina.`` (plugins,
envs registered by other tests) are only tested when listed in ``EXTRA_IDS`` or in the
comma-separated ``LAMINA_CONFORMANCE_IDS`` variable. An environment that cannot be built with its
defaults gets constructor arguments (and, where it helps, a seed and a checker adaptation) in
``CASES``.

Checks, per environment:

- Gymnasium's ``check_env`` on ``env.unwrapped`` (render checks skipped), with no ``WARN:`` from it.
  ``TextSpace`` already makes the text spaces checkable (any ``str``, samples from printable ASCII),
  so no adaptation is needed for them. Adaptations: ALFWorld plays only the quick game while the
  checker runs (it resets with arbitrary seeds, and some games take seconds to load); TextWorld uses
  ``num_games=2``, so the checker's seeds map to two cached games instead of generating new ones.
- Same seed, same task and trajectory: a cached instance and a fresh one, reset with one seed, give
  equal observations, rewards, flags and infos over 3 steps of the expert's and of the first
  admissible action; two resets with one seed give equal anchors.
- Junk actions (empty, 100 kB, unicode, tag soup, hypothesis text) never raise, leave the anchor
  (and task, admissible actions, ``won``) unchanged and give ``action_valid=False``; multi-turn
  episodes go on. Single-turn environments (one attempt ends the episode) end, with reward 0 and
  ``won`` False. Hypothesis text on open answer spaces (``admissible_actions`` None) can be a
  readable answer (``"٣"`` is an integer, ``"$a$"`` a formula), so there the property is only: no
  raise, the episode ends, the anchor is unchanged, and an unreadable answer earns nothing.
  Hypothesis runs on ``env.unwrapped`` (no ``TimeLimit``: many junk steps must not truncate).
- ``task``, ``admissible_actions``, ``anchor`` (hashable), ``won``, ``action_valid`` are present,
  of the right types, after reset and after every step.
- ``env.unwrapped.expert_action()`` reaches ``won=True`` within the registered step limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from conftest import shared_path
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lamina.envs as lamina_envs
from lamina.envs.reasoning import SingleTurnEnv

# Ids outside ``lamina.*`` to test as well (plugins); LAMINA_CONFORMANCE_IDS adds more.
EXTRA_IDS: tuple[str, ...] = ()
ALFWORLD_QUICK_GAME = (
    "valid_seen/pick_and_place_simple-ToiletPaper-None-ToiletPaperHanger-406/trial_T20190908_122858_883968"
)
QA_RECORDS = [
    {"question": "What is 6 times 7?", "answer": "42"},
    {"question": "What is 1/2 as a decimal?", "answer": "0.5"},
]
JUNK = {
    "empty": "",
    "100kB": "x" * 100_000,
    "unicode": "ünïcødé ☃ 🚽 ħ€ł",
    "tag_soup": "<think>hmm</think><action><b>open the door</b></action></action>",
}
TRAJECTORY_STEPS = 3
DEFAULT_EXPERT_STEPS = 100


# -- per-environment cases -----------------------------------------------------------------------
def _qa_kwargs(tmp: Path) -> dict[str, Any]:
    path = tmp / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in QA_RECORDS) + "\n", encoding="utf-8")
    return {"path": str(path)}


def _openenv_kwargs() -> dict[str, Any]:
    """A real OpenEnv server on 127.0.0.1 (``openenv_server.py``), started once, stopping by itself."""
    from openenv_server import shared_server

    return {
        "url": shared_server(),
        "task": "Find the secret number.",
        "admissible_field": "legal_actions",
        "won_field": "won",
        "anchor": "state",
    }


def _scienceworld_kwargs() -> dict[str, Any]:
    """The task with the shortest gold path (5 steps); skipped without Java (fails under CI=true)."""
    from scienceworld_check import require_scienceworld

    require_scienceworld()
    return {"tasks": ["find-non-living-thing"]}


def _alfworld_kwargs(tmp: Path) -> dict[str, Any]:
    data = shared_path("alfworld", "json_2.1.1")
    return {"data_path": str(data), "split": "eval_in_distribution", "task_types": ["pick_and_place_simple"]}


def _alfworld_quick_game(env: gym.Env) -> Path:
    return Path(env.unwrapped.data_path) / ALFWORLD_QUICK_GAME


def _alfworld_seed(env: gym.Env) -> int:
    """The seed whose game is the quick one (``reset(seed=s)`` plays game ``s % len(games)``)."""
    return env.unwrapped.games.index(_alfworld_quick_game(env))


@contextlib.contextmanager
def _alfworld_only_quick_game(env: gym.Env) -> Iterator[None]:
    """Narrows the game list to the quick game, so the checker's arbitrary seeds reset fast."""
    games = env.unwrapped.games
    env.unwrapped.games = [_alfworld_quick_game(env)]
    try:
        yield
    finally:
        env.unwrapped.games = games


@dataclass(frozen=True)
class EnvCase:
    """How to test one environment quickly.

    Args:
        kwargs: constructor arguments, given a scratch folder for files the env needs.
        seed: the seed to play, given the built env (e.g. one mapping to a quick game).
        for_checker: a context manager narrowing the env while ``check_env`` runs.
    """

    kwargs: Callable[[Path], dict[str, Any]] = field(default=lambda tmp: {})
    seed: Callable[[gym.Env], int] = field(default=lambda env: 0)
    for_checker: Callable[[gym.Env], contextlib.AbstractContextManager[None]] = field(
        default=lambda env: contextlib.nullcontext()
    )


CASES: dict[str, EnvCase] = {
    "lamina/QA-v0": EnvCase(kwargs=_qa_kwargs),
    "lamina/ALFWorld-v0": EnvCase(
        kwargs=_alfworld_kwargs, seed=_alfworld_seed, for_checker=_alfworld_only_quick_game
    ),
    "lamina/TextWorld-v0": EnvCase(
        kwargs=lambda tmp: {"challenge": "tw-treasure_hunter", "settings": {"level": 1}, "num_games": 2}
    ),
    "lamina/ReasoningGym-v0": EnvCase(kwargs=lambda tmp: {"task": "basic_arithmetic"}),
    "lamina/OpenEnv-v0": EnvCase(kwargs=lambda tmp: _openenv_kwargs()),
    "lamina/ScienceWorld-v0": EnvCase(kwargs=lambda tmp: _scienceworld_kwargs()),
    "lamina/TextArena-v0": EnvCase(kwargs=lambda tmp: {"game": "TowerOfHanoi-v0"}),
}


def _entry_point_module(env_id: str) -> str:
    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, str):
        return entry_point.split(":", 1)[0]
    return getattr(entry_point, "__module__", "")


def conformance_ids() -> list[str]:
    """Registered ids with an entry point under ``lamina.``, plus the explicitly listed ones."""
    from_env = os.environ.get("LAMINA_CONFORMANCE_IDS", "").split(",")
    listed = {*EXTRA_IDS, *(i.strip() for i in from_env if i.strip())}
    registered = lamina_envs.registered_envs()
    missing = sorted(listed - set(registered))
    if missing:
        raise ValueError(f"LAMINA_CONFORMANCE_IDS/EXTRA_IDS name unregistered ids {missing}")
    return [i for i in registered if _entry_point_module(i).startswith("lamina.") or i in listed]


ENV_IDS = conformance_ids()


class EnvCache:
    """Environments built once for the whole module (ALFWorld loads take seconds), by id and copy."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self._envs: dict[tuple[str, int], gym.Env] = {}

    def case(self, env_id: str) -> EnvCase:
        return CASES.get(env_id, EnvCase())

    def get(self, env_id: str, copy: int = 0) -> tuple[gym.Env, int]:
        """Cached instance number ``copy`` (built on first use) and the seed to play it with."""
        key = (env_id, copy)
        if key not in self._envs:
            self._envs[key] = lamina_envs.make(env_id, **self.case(env_id).kwargs(self.tmp))
        env = self._envs[key]
        return env, self.case(env_id).seed(env)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvCache]:
    envs = EnvCache(tmp_path_factory.mktemp("conformance"))
    yield envs
    envs.close()


# -- helpers -------------------------------------------------------------------------------------
def assert_contract_info(info: dict[str, Any], after_reset: bool = False) -> None:
    """The contract's info keys, with their types."""
    missing = {"task", "admissible_actions", "anchor", "won", "action_valid"} - set(info)
    assert not missing, f"info lacks {sorted(missing)}"
    assert isinstance(info["task"], str) and info["task"].strip(), info["task"]
    admissible = info["admissible_actions"]
    assert admissible is None or (
        isinstance(admissible, list) and all(isinstance(a, str) for a in admissible)
    )
    assert isinstance(info["anchor"], Hashable)
    hash(info["anchor"])
    assert isinstance(info["won"], bool) and isinstance(info["action_valid"], bool)
    if after_reset:
        assert info["action_valid"] is True and info["won"] is False


def is_single_turn(env: gym.Env) -> bool:
    return isinstance(env.unwrapped, SingleTurnEnv)


def next_action(env: gym.Env, info: dict[str, Any], policy: str) -> str:
    """The expert's action, or the first admissible one (falling back on each other)."""
    expert = env.unwrapped.expert_action()
    admissible = info["admissible_actions"] or []
    if policy == "expert":
        return expert if expert is not None else (admissible or [""])[0]
    return admissible[0] if admissible else (expert or "")


def trajectory(env: gym.Env, seed: int, policy: str) -> list[tuple[Any, ...]]:
    """Reset with ``seed`` and play up to ``TRAJECTORY_STEPS`` steps; everything returned, in order."""
    obs, info = env.reset(seed=seed)
    trace: list[tuple[Any, ...]] = [(obs, info)]
    for _ in range(TRAJECTORY_STEPS):
        action = next_action(env, info, policy)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((action, obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return trace


def could_be_valid(text: str, admissible: list[str] | None) -> bool:
    """Whether hypothesis text might be a legal action: an admissible one, or a ``verb[...]`` command."""
    if admissible is None:
        return False
    if text.strip().lower() in {a.lower() for a in admissible}:
        return True
    return re.search(r"\w\s*\[.*\]", text, re.S) is not None


def assert_junk_rejected(
    env: gym.Env, before: dict[str, Any], action: str, step: tuple[Any, ...], strict: bool = True
) -> None:
    """``step`` (the 5-tuple for ``action``) left the state as ``before`` and was marked invalid.

    ``strict=False`` (open answer spaces under hypothesis) allows a readable answer.
    """
    obs, reward, terminated, truncated, info = step
    assert_contract_info(info)
    assert isinstance(obs, str) and obs.strip(), "the observation should say why the action was invalid"
    assert "x" * 1000 not in obs, "the observation echoes the whole action"
    assert info["anchor"] == before["anchor"]
    assert info["task"] == before["task"]
    if is_single_turn(env):
        assert terminated is True, "a single-turn episode ends after one attempt"
        if strict or not info["action_valid"]:
            assert info["action_valid"] is False and info["won"] is False and reward == 0.0
    else:
        assert info["action_valid"] is False
        assert terminated is False, "an invalid action must not end a multi-turn episode"
        assert info["admissible_actions"] == before["admissible_actions"]
        assert info["won"] == before["won"]


# -- the checks ----------------------------------------------------------------------------------
pytestmark = pytest.mark.parametrize("env_id", ENV_IDS)


def test_passes_gymnasium_env_checker(cache: EnvCache, env_id: str) -> None:
    env, _ = cache.get(env_id)
    with cache.case(env_id).for_checker(env), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    complaints = [str(w.message) for w in caught if "WARN:" in str(w.message)]
    assert not complaints, complaints


@pytest.mark.parametrize("policy", ["expert", "first_admissible"])
def test_same_seed_same_task_and_trajectory(cache: EnvCache, env_id: str, policy: str) -> None:
    env, seed = cache.get(env_id)
    first = trajectory(env, seed, policy)
    second = trajectory(env, seed, policy)  # the same instance, after an episode
    third = trajectory(cache.get(env_id, copy=1)[0], seed, policy)  # another copy, as in a GRPO group
    assert first[0][1]["task"] == second[0][1]["task"] == third[0][1]["task"]
    assert first == second == third


def test_equal_states_give_equal_anchors(cache: EnvCache, env_id: str) -> None:
    env, seed = cache.get(env_id)
    obs_a, info_a = env.reset(seed=seed)
    env.step(next_action(env, info_a, "expert"))  # leave the start state in between
    obs_b, info_b = env.reset(seed=seed)
    assert info_a["anchor"] == info_b["anchor"] and obs_a == obs_b
    assert hash(info_a["anchor"]) == hash(info_b["anchor"])


@pytest.mark.parametrize("junk", list(JUNK.values()), ids=list(JUNK))
def test_junk_actions_are_invalid_and_change_nothing(cache: EnvCache, env_id: str, junk: str) -> None:
    env, seed = cache.get(env_id)
    _, before = env.reset(seed=seed)
    assert_junk_rejected(env, before, junk, env.step(junk))
    if not is_single_turn(env):  # still playable: the expert's action is accepted afterwards
        _, _, _, _, info = env.step(next_action(env, before, "expert"))
        assert info["action_valid"] is True


def test_hypothesis_text_is_invalid_and_changes_nothing(cache: EnvCache, env_id: str) -> None:
    env, seed = cache.get(env_id)
    raw = env.unwrapped
    _, before = raw.reset(seed=seed)

    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.text(max_size=300))
    def check(text: str) -> None:
        assume(not could_be_valid(text, before["admissible_actions"]))
        if is_single_turn(raw):
            raw.reset(seed=seed)
        open_answers = before["admissible_actions"] is None
        assert_junk_rejected(raw, before, text, raw.step(text), strict=not open_answers)

    check()


def test_info_keys_after_reset_and_every_step(cache: EnvCache, env_id: str) -> None:
    env, seed = cache.get(env_id)
    _, info = env.reset(seed=seed)
    assert_contract_info(info, after_reset=True)
    for action in [JUNK["tag_soup"], next_action(env, info, "first_admissible")]:
        _, _, terminated, truncated, info = env.step(action)
        assert_contract_info(info)
        if terminated or truncated:
            break


def test_expert_wins(cache: EnvCache, env_id: str) -> None:
    env, seed = cache.get(env_id)
    _, info = env.reset(seed=seed)
    if env.unwrapped.expert_action() is None:
        pytest.skip(f"{env_id} has no expert_action(); give it one to have this check")
    limit = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else DEFAULT_EXPERT_STEPS
    terminated = truncated = False
    for _ in range(limit):
        action = env.unwrapped.expert_action()
        assert action is not None, f"the expert gave up before winning (last info: {info})"
        _, _, terminated, truncated, info = env.step(action)
        assert_contract_info(info)
        assert info["action_valid"], f"the expert's action {action!r} was invalid"
        if terminated or truncated:
            break
    assert info["won"] and terminated and not truncated
