"""Steps per second of the WebShop environment under random admissible actions.

    python bench/bench_webshop.py              # 20,000 steps per row
    python bench/bench_webshop.py --steps 5000

Rows (single process, episodes of at most 15 steps, ``reset`` time included):
- ``dict replay``: the floor. The same random walk as the ``WebShopEnv`` row, recorded beforehand
  as a table ``(anchor, action) -> (observation, reward, terminated, info, next anchor)`` and
  replayed by dictionary lookups: what an environment that did no work at all would cost.
- ``WebShopEnv``: the class itself, search cache emptied first (a query met again within the run
  is a cache hit); ``TimeLimit(...)`` adds Gymnasium's wrapper as ``max_episode_steps=15`` does.
- ``search only``: every step a ``search[...]`` with a never-seen query (BM25 scoring, no cache
  hit), followed by ``click[back to search]``; only the searches are counted.
A random action is drawn uniformly from ``info["admissible_actions"]``; a drawn search (one of the
candidate queries) is replaced half of the time by the first words of a random product title.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from gymnasium.wrappers import TimeLimit

from lamina.envs.webshop import WebShopEnv, shared_webshop_dir

MAX_STEPS = 15


def _random_action(rng: random.Random, env: WebShopEnv, info: dict) -> str:
    action = rng.choice(info["admissible_actions"])
    if not action.startswith("search[") or rng.random() < 0.5:
        return action
    title = rng.choice(env.catalog.products).title
    return f"search[{' '.join(title.split()[:4])}]"


def random_walk(env, base: WebShopEnv, steps: int, seed: int = 0, record: dict | None = None):
    """Runs ``steps`` random admissible steps; returns (seconds, the (start anchor, actions) episodes)."""
    rng = random.Random(seed)
    episodes: list[tuple[object, list[str]]] = []
    start = time.perf_counter()
    episode_seed, done, taken = seed, True, 0
    for _ in range(steps):
        if done or taken == MAX_STEPS:
            _, info = env.reset(seed=episode_seed)
            episode_seed, taken = episode_seed + 1, 0
            episodes.append((("reset", episode_seed - 1), []))
            anchor = ("reset", episode_seed - 1)
        action = _random_action(rng, base, info)
        observation, reward, terminated, truncated, info = env.step(action)
        taken += 1
        done = terminated or truncated
        episodes[-1][1].append(action)
        if record is not None:
            key = (anchor, action)
            anchor = (info["anchor"], episode_seed, taken)
            record[key] = (observation, reward, terminated, info, anchor)
    return time.perf_counter() - start, episodes


def dict_replay(table: dict, episodes: list[tuple[object, list[str]]]) -> tuple[float, int]:
    """Replays the recorded walk with dictionary lookups only."""
    start, count = time.perf_counter(), 0
    for anchor, actions in episodes:
        for action in actions:
            observation, reward, terminated, info, anchor = table[(anchor, action)]
            count += 1
    return time.perf_counter() - start, count


def search_only(env: WebShopEnv, steps: int) -> float:
    """Seconds for ``steps`` uncached searches (the back-to-search clicks are not timed)."""
    env.reset(seed=0)
    words = [w for p in env.catalog.products[:200] for w in p.title.lower().split()[:3]]
    rng, seconds = random.Random(0), 0.0
    for i in range(steps):
        query = f"{' '.join(rng.sample(words, 3))} q{i}"
        start = time.perf_counter()
        env.step(f"search[{query}]")
        seconds += time.perf_counter() - start
        env.step("click[back to search]")
    return seconds


def _row(name: str, steps: int, seconds: float, floor: float | None) -> str:
    rate = steps / seconds
    ratio = f"{floor / rate:.1f}x slower" if floor else "1.0x"
    return f"| {name} | {steps} | {seconds:.2f} | {rate:,.0f} | {ratio} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per row")
    args = parser.parse_args(argv)
    catalogs: list[tuple[str, Callable[[], WebShopEnv]]] = []
    if shared_webshop_dir() is not None:
        catalogs.append(("shared 100", lambda: WebShopEnv(catalog="shared")))
    catalogs.append(("procedural 500", lambda: WebShopEnv(catalog="procedural", num_products=500)))
    catalogs.append(("procedural 5000", lambda: WebShopEnv(catalog="procedural", num_products=5000)))

    print("| setting | steps | seconds | steps/s | vs dict replay |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, make_env in catalogs:
        env = make_env()
        env.catalog.clear_search_cache()
        seconds, _ = random_walk(env, env, args.steps)
        wrapped = TimeLimit(make_env(), max_episode_steps=MAX_STEPS)
        env.catalog.clear_search_cache()
        wrapped_seconds, _ = random_walk(wrapped, wrapped.unwrapped, args.steps)
        table: dict = {}
        _, episodes = random_walk(env, env, args.steps, record=table)
        floor_seconds, floor_steps = dict_replay(table, episodes)
        floor = floor_steps / floor_seconds
        print(_row(f"dict replay ({label})", floor_steps, floor_seconds, None))
        print(_row(f"WebShopEnv ({label})", args.steps, seconds, floor))
        print(_row(f"TimeLimit(WebShopEnv) ({label})", args.steps, wrapped_seconds, floor))
        searches = max(args.steps // 10, 100)
        print(_row(f"search only, uncached ({label})", searches, search_only(env, searches), floor))


if __name__ == "__main__":
    main()
