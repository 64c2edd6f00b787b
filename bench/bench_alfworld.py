"""ALFWorld: the raw alfworld/TextWorld engine vs ``ALFWorldEnv``, steps/s on the same games and actions.

    python bench/bench_alfworld.py                      # 4 games of valid_seen, 50 steps, 2 rounds
    python bench/bench_alfworld.py --split train --games 6 --steps 80

Both sides play the same game in lockstep with the same random admissible actions (one
``random.Random(seed)`` per game and round), requesting the same information from the engine
(admissible commands, facts, won). The raw side is alfworld's engine as ``AlfredTWEnv`` builds it
(``textworld.start`` on ``game.tw-pddl`` with ``AlfredDemangler`` + ``AlfredInfos``); the wrapper side
adds validation, anchors and Gymnasium semantics. Every step is timed on both sides back to back, so
other processes on the machine slow both alike; resets are timed apart from steps.
Data: ``--data-path``, else ``$ALFWORLD_DATA``, else the shared folder's ``alfworld/``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from lamina.envs.alfworld import GAME_FILE, ALFWorldEnv
from lamina.paths import shared_dir


def default_data_path() -> Path:
    if os.environ.get("ALFWORLD_DATA"):
        return Path(os.environ["ALFWORLD_DATA"])
    shared = shared_dir()
    if shared is None:
        raise SystemExit("no ALFWorld data: pass --data-path, set ALFWORLD_DATA or LAMINA_SHARED")
    return shared / "alfworld"


class RawEngine:
    """alfworld's TextWorld engine, requested the same infos as ``ALFWorldEnv``."""

    def __init__(self) -> None:
        self.engine = None
        self.game: Path | None = None

    def load_and_reset(self, game: Path):
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

        path = str(game / GAME_FILE)
        if self.engine is None:
            infos = textworld.EnvInfos(
                won=True, lost=True, admissible_commands=True, facts=True, extras=["gamefile"]
            )
            wrappers = [AlfredDemangler(shuffle=False), AlfredInfos]
            self.engine = textworld.start(path, request_infos=infos, wrappers=wrappers)
        elif game != self.game:
            self.engine.load(path)
        self.game = game
        return self.engine.reset()


def play_lockstep(raw: RawEngine, env: ALFWorldEnv, game: Path, steps: int, seed: int) -> dict[str, float]:
    """Plays ``game`` on both sides in lockstep with the same random admissible actions.

    Each action goes to the raw engine and to the wrapper back to back (who goes first alternates),
    so load from other processes slows both alike. Returns seconds spent in resets and in steps.
    """
    totals = dict.fromkeys(("raw_reset", "env_reset", "raw_step", "env_step"), 0.0)
    rng = random.Random(seed)
    done = terminated = True
    for i in range(steps):
        if done or terminated:
            start = time.perf_counter()
            state = raw.load_and_reset(game)
            totals["raw_reset"] += time.perf_counter() - start
            start = time.perf_counter()
            _obs, info = env.reset(options={"game": game})
            totals["env_reset"] += time.perf_counter() - start
        assert info["admissible_actions"] == [c for c in state["admissible_commands"] if c != "help"]
        action = rng.choice(info["admissible_actions"])
        for side in ("raw", "env") if i % 2 == 0 else ("env", "raw"):
            start = time.perf_counter()
            if side == "raw":
                state, _score, done = raw.engine.step(action)
            else:
                _obs, _reward, terminated, _truncated, info = env.step(action)
            totals[f"{side}_step"] += time.perf_counter() - start
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-path", type=Path, default=None)
    parser.add_argument("--split", default="eval_in_distribution")
    parser.add_argument("--games", type=int, default=4, help="games spread evenly over the split")
    parser.add_argument("--steps", type=int, default=50, help="random admissible actions per game and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = ALFWorldEnv(data_path=args.data_path or default_data_path(), split=args.split)
    count = min(args.games, len(env.games))
    games = [env.games[i * len(env.games) // count] for i in range(count)]
    raw = RawEngine()
    rows = []
    for game in games:
        totals = dict.fromkeys(("raw_reset", "env_reset", "raw_step", "env_step"), 0.0)
        for round_ in range(args.rounds):
            for key, seconds in play_lockstep(raw, env, game, args.steps, args.seed + round_).items():
                totals[key] += seconds
        rows.append((game, totals))
    env.close()

    n_steps = args.steps * args.rounds
    print(f"ALFWorld {args.split}: {count} games x {args.rounds} rounds x {args.steps} random steps")
    print()
    print("| game | raw reset (s) | env reset (s) | raw steps/s | env steps/s | env/raw |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for game, t in rows:
        raw_sps, env_sps = n_steps / t["raw_step"], n_steps / t["env_step"]
        print(
            f"| {game.parent.name} | {t['raw_reset'] / args.rounds:.2f} | {t['env_reset'] / args.rounds:.2f} "
            f"| {raw_sps:.1f} | {env_sps:.1f} | {env_sps / raw_sps:.3f} |"
        )
    raw_total = sum(t["raw_step"] for _, t in rows)
    env_total = sum(t["env_step"] for _, t in rows)
    all_steps = n_steps * len(rows)
    print(
        f"| **all** | | | {all_steps / raw_total:.1f} | {all_steps / env_total:.1f} "
        f"| **{raw_total / env_total:.3f}** |"
    )


if __name__ == "__main__":
    main()
