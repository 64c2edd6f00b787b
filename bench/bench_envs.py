"""Steps/s of every environment: raw engine vs lamina wrapper vs ``EnvGroupRunner`` worker processes.

    python -m bench.bench_envs                               # all envs, ~2 minutes on 2 cores
    python -m bench.bench_envs --envs sokoban,frozenlake --steps 5000
    python -m bench.bench_envs --envs alfworld --alfworld-steps 200 --groups 4 --runner-workers 4

Columns, all measured in one run with random admissible actions from a fixed seed:
- ``raw``: the engine without lamina, where there is one. TextWorld: ``textworld.start`` on the same
  compiled game with the same ``EnvInfos`` as ``TextWorldEnv``. ALFWorld: alfworld's engine as
  ``AlfredTWEnv`` builds it (``bench_alfworld.RawEngine``). FrozenLake: Gymnasium's own
  ``FrozenLakeEnv`` on the same map. WebShop and Sokoban are lamina's own engines (no raw column).
  Raw and wrapper play in lockstep (the same action to both, back to back), so load from other
  processes slows both alike.
- ``wrapper``: ``lamina.envs.make(...)`` in this process (Gymnasium's wrappers included).
- ``runner``: ``EnvGroupRunner`` with B groups x G copies (8 envs = 2 x 4 by default) over 2 workers;
  each batch is reset together and stepped until every episode ends, finished envs get ``None``
  (as a GRPO rollout does), so stragglers count. Rate = env steps / seconds inside ``step()``.
Only steps are timed (resets are not). Episodes are capped at the registered ``max_episode_steps``
(50 for TextWorld, which has none registered).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lamina.envs
from lamina.envs.runner import EnvGroupRunner
from lamina.envs.textworld import request_infos

TEXTWORLD_GAMES = 4  # treasure_hunter level 1 games 0..3 (generated once, ~5 s each, then cached)
ALFWORLD_GAMES = 4  # the smallest (quickest to load) games of valid_seen


def random_action(rng: random.Random, info: dict[str, Any]) -> str:
    """A uniformly drawn admissible action (WebShop lists concrete candidate searches)."""
    return rng.choice(info["admissible_actions"])


# ---------------------------------------------------------------------------------------------
# Raw engines: reset(seed or game, wrapper env) and step(action) -> done.
# ---------------------------------------------------------------------------------------------


class RawTextWorld:
    """``textworld.start`` on the wrapper's compiled game, with the wrapper's ``EnvInfos``."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.path: str | None = None

    def reset(self, env: Any) -> None:
        import textworld

        path = str(env.unwrapped._engine_path)
        if path != self.path:
            if self.engine is not None:
                self.engine.close()
            infos = request_infos()
            self.engine, self.path = textworld.start(path, request_infos=infos), path
        self.engine.reset()

    def step(self, action: str) -> bool:
        state, _score, done = self.engine.step(action)
        return bool(done or state["won"] or state["lost"])

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


class RawALFWorld:
    """alfworld's engine, as ``bench/bench_alfworld.py`` builds it, on the wrapper's game."""

    def __init__(self) -> None:
        from bench.bench_alfworld import RawEngine

        self.raw = RawEngine()

    def reset(self, env: Any) -> None:
        self.raw.load_and_reset(env.unwrapped._game)

    def step(self, action: str) -> bool:
        state, _score, done = self.raw.engine.step(action)
        return bool(done or state["won"])

    def close(self) -> None:
        if self.raw.engine is not None:
            self.raw.engine.close()


class RawFrozenLake:
    """Gymnasium's ``FrozenLakeEnv`` (integer actions, no text) on the wrapper's map."""

    ACTIONS = {"left": 0, "down": 1, "right": 2, "up": 3}

    def __init__(self) -> None:
        self.env: Any = None

    def reset(self, env: Any) -> None:
        from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

        letters = [row.replace("_", "F").replace("P", "F") for row in env.unwrapped._map]
        letters[0] = "S" + letters[0][1:]
        self.env = FrozenLakeEnv(desc=letters, is_slippery=False)
        self.env.reset(seed=0)

    def step(self, action: str) -> bool:
        _obs, _reward, terminated, truncated, _info = self.env.step(self.ACTIONS[action])
        return bool(terminated or truncated)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The three measurements.
# ---------------------------------------------------------------------------------------------


@dataclass
class EnvSpec:
    """One benchmarked environment: how to make it, which episodes to play, its raw engine."""

    name: str
    kwargs: dict[str, Any]
    steps: int
    max_episode_steps: int | None = None
    raw: Callable[[], Any] | None = None
    # Options for reset of episode k (ALFWorld pins games); None: reset(seed=k) only.
    options: Callable[[int], dict[str, Any] | None] = field(default=lambda k: None)


def bench_single(spec: EnvSpec, seed: int) -> tuple[float | None, float]:
    """Steps/s of the raw engine (None without one) and of the wrapper, in lockstep."""
    env = lamina.envs.make(spec.name, max_episode_steps=spec.max_episode_steps, **spec.kwargs)
    raw = spec.raw() if spec.raw else None
    rng = random.Random(seed)
    seconds = {"raw": 0.0, "env": 0.0}
    episode, done = 0, True
    for i in range(spec.steps):
        if done:
            _obs, info = env.reset(seed=episode, options=spec.options(episode))
            if raw is not None:
                raw.reset(env)
            episode += 1
        action = random_action(rng, info)
        raw_done = False
        # Who goes first alternates, so neither side always gets the warmer cache.
        for side in ("raw", "env") if i % 2 == 0 else ("env", "raw"):
            start = time.perf_counter()
            if side == "env":
                _obs, _reward, terminated, truncated, info = env.step(action)
            elif raw is not None:
                raw_done = raw.step(action)
            seconds[side] += time.perf_counter() - start
        done = terminated or truncated
        if raw is not None and raw_done != terminated:
            raise AssertionError(f"{spec.name}: raw engine and wrapper disagree on the episode's end")
    env.close()
    if raw is not None:
        raw.close()
    raw_rate = spec.steps / seconds["raw"] if raw is not None else None
    return raw_rate, spec.steps / seconds["env"]


def bench_runner(spec: EnvSpec, groups: int, group_size: int, workers: int, seed: int) -> float:
    """Env steps/s through ``EnvGroupRunner``: batches of ``groups`` x ``group_size`` copies."""
    num_envs = groups * group_size
    rng = random.Random(seed)
    steps, seconds, batch = 0, 0.0, 0
    with EnvGroupRunner(
        spec.name,
        num_envs,
        num_workers=workers,
        env_kwargs=spec.kwargs,
        max_episode_steps=spec.max_episode_steps,
    ) as runner:
        while steps < spec.steps:
            tasks = [batch * groups + g for g in range(groups) for _ in range(group_size)]
            _obs, infos = runner.reset(tasks, options=[spec.options(k) for k in tasks])
            done = [False] * num_envs
            while not all(done) and steps < spec.steps:
                actions = [
                    None if d else random_action(rng, info) for d, info in zip(done, infos, strict=True)
                ]
                start = time.perf_counter()
                _obs, _rewards, terminated, truncated, infos = runner.step(actions)
                seconds += time.perf_counter() - start
                steps += sum(a is not None for a in actions)
                done = [a or b for a, b in zip(terminated, truncated, strict=True)]
            batch += 1
        if runner.restarts:
            print(f"  note: {runner.restarts} worker restarts during {spec.name}")
    return steps / seconds


# ---------------------------------------------------------------------------------------------
# The environments.
# ---------------------------------------------------------------------------------------------


def quickest_alfworld_games(data_path: Path, count: int) -> list[Path]:
    """The ``count`` valid_seen games with the smallest ``game.tw-pddl`` (fewest objects: fast loads)."""
    from lamina.envs.alfworld import ALFWorldEnv

    games = ALFWorldEnv(data_path=data_path, split="eval_in_distribution").games
    return sorted(games, key=lambda g: (g / "game.tw-pddl").stat().st_size)[:count]


def env_specs(args: argparse.Namespace) -> dict[str, EnvSpec]:
    specs = {
        "textworld": EnvSpec(
            "textworld",
            {"challenge": "tw-treasure_hunter", "settings": {"level": 1}, "num_games": TEXTWORLD_GAMES},
            args.textworld_steps,
            max_episode_steps=50,
            raw=RawTextWorld,
        ),
        "alfworld": None,
        "webshop": EnvSpec("webshop", {"catalog": "shared"}, args.steps),
        "sokoban": EnvSpec("sokoban", {}, args.steps),
        "frozenlake": EnvSpec("frozenlake", {}, args.steps, raw=RawFrozenLake),
    }
    if "alfworld" in args.envs:
        from bench.bench_alfworld import default_data_path

        data_path = args.alfworld_data or default_data_path()
        games = [str(g) for g in quickest_alfworld_games(data_path, ALFWORLD_GAMES)]
        specs["alfworld"] = EnvSpec(
            "alfworld",
            {"data_path": str(data_path), "split": "eval_in_distribution"},
            args.alfworld_steps,
            raw=RawALFWorld,
            options=lambda k: {"game": games[k % len(games)]},
        )
    return {name: spec for name, spec in specs.items() if name in args.envs and spec is not None}


def rows(quick: bool) -> list:
    """``lamina bench`` rows: each engine with a raw counterpart, wrapper steps/s vs raw steps/s."""
    from bench.common import Row

    envs = ["frozenlake"] if quick else ["textworld", "alfworld", "frozenlake"]
    args = argparse.Namespace(
        envs=envs, steps=300 if quick else 3000, textworld_steps=1000, alfworld_steps=128, alfworld_data=None
    )
    out = []
    for name, spec in env_specs(args).items():
        raw_rate, env_rate = bench_single(spec, 0)
        out.append(
            Row(
                f"{name}: steps/s, lamina's wrapper vs the raw engine (same actions, lockstep)",
                f"raw {raw_rate:,.0f}/s",
                f"{env_rate:,.0f}/s",
                env_rate / raw_rate,
                ">= 0.9x (rate)",
                env_rate / raw_rate >= 0.9,
            )
        )
    return out


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--envs", default="textworld,alfworld,webshop,sokoban,frozenlake")
    parser.add_argument(
        "--steps", type=int, default=3000, help="steps per column (webshop, sokoban, frozenlake)"
    )
    parser.add_argument("--textworld-steps", type=int, default=1000)
    parser.add_argument("--alfworld-steps", type=int, default=128)
    parser.add_argument("--alfworld-data", type=Path, default=None)
    parser.add_argument("--groups", type=int, default=2, help="runner: B tasks per batch")
    parser.add_argument("--group-size", type=int, default=4, help="runner: G copies of each task")
    parser.add_argument("--runner-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.envs = [e.strip() for e in args.envs.split(",") if e.strip()]

    rows = []
    started = time.perf_counter()
    for name, spec in env_specs(args).items():
        t0 = time.perf_counter()
        raw_rate, env_rate = bench_single(spec, args.seed)
        runner_rate = bench_runner(spec, args.groups, args.group_size, args.runner_workers, args.seed)
        rows.append((name, raw_rate, env_rate, runner_rate))
        print(f"  {name}: {spec.steps} steps per column, {time.perf_counter() - t0:.0f} s", flush=True)

    num_envs = args.groups * args.group_size
    print()
    print(
        f"| env | raw steps/s | wrapper steps/s | wrapper/raw "
        f"| runner steps/s ({num_envs} envs, {args.runner_workers} workers) | runner/wrapper |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, raw_rate, env_rate, runner_rate in rows:
        ratio = env_rate / raw_rate if raw_rate else None
        print(
            f"| {name} | {_fmt(raw_rate)} | {_fmt(env_rate)} | {_fmt(ratio, 2)} "
            f"| {_fmt(runner_rate)} | {runner_rate / env_rate:.2f} |"
        )
    load = os.getloadavg()
    print()
    print(
        f"{len(os.sched_getaffinity(0))} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1/5/15 min) at the end; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
