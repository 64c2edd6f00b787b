"""Play a lamina environment yourself, in the terminal.

    lamina play env=sokoban
    lamina play env=textworld seed=3 env.kwargs.challenge=tw-coin_collector env.kwargs.settings={level:2}
    lamina play env=qa env.kwargs.path=questions.jsonl

Each turn shows the task, the observation, the admissible actions (numbered), the last reward, the
return so far and whether the episode is done. Type an action, or the number of an admissible
action (a line that is itself an admissible action is taken as that action). ``:e`` shows the
expert's next action, ``:r`` resets (same seed; ``:r N`` plays seed N), ``:h`` lists the commands
and ``:q`` (or end of input) quits.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

HELP = (
    "Type an action, or the number of an admissible action. "
    ":e expert's next action, :r reset (:r N: seed N), :h help, :q quit."
)
PROMPT = "> "


@dataclass
class Episode:
    """What the player has done in the current episode."""

    seed: int
    steps: int = 0
    episode_return: float = 0.0
    won: bool = False
    done: bool = False


def _format_actions(actions: Sequence[str] | None) -> str:
    if actions is None:
        return "Actions: free text (no admissible list)."
    if not actions:
        return "Actions: none."
    width = len(str(len(actions)))
    return "Actions:\n" + "\n".join(f"  {i:>{width}}. {a}" for i, a in enumerate(actions, start=1))


def _show(print_fn: Callable[[str], Any], observation: str, info: dict[str, Any]) -> None:
    print_fn(observation)
    print_fn(_format_actions(info.get("admissible_actions")))


def _status(reward: float, episode: Episode, info: dict[str, Any], truncated: bool) -> str:
    valid = "" if info.get("action_valid", True) else " | invalid action"
    ending = ""
    if episode.done:
        ending = " | you won!" if episode.won else (" | time is up" if truncated else " | episode over")
    return (
        f"reward {reward:g} | return {episode.episode_return:g} | step {episode.steps} | "
        f"done {episode.done} | won {episode.won}{valid}{ending}"
    )


def choose_action(text: str, admissible: Sequence[str] | None) -> str | None:
    """The action a line stands for: a number picks an admissible action (None if out of range).

    A line that is itself an admissible action (``"12"`` in a guessing game listing 11..16) is that
    action; where the action space is open (``admissible`` None) a number is an answer like any
    other text.
    """
    stripped = text.strip()
    if admissible is not None and stripped.isdecimal() and stripped not in admissible:
        index = int(stripped)
        return admissible[index - 1] if 1 <= index <= len(admissible) else None
    return text


def play(
    env_name: str,
    env_kwargs: dict[str, Any],
    seed: int = 0,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[[str], Any] = print,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Runs an interactive session on one environment until the player quits.

    Args:
        env_name: a short name (``sokoban``), ``Sokoban-v0`` or ``lamina/Sokoban-v0``.
        env_kwargs: constructor arguments of the environment.
        seed: seed of the first episode (``:r`` replays it, ``:r N`` plays seed N).
        input_fn: reads one line given a prompt (``input``); EOFError or KeyboardInterrupt quits.
        print_fn: writes one block of text (``print``).
        max_steps: stop after this many environment steps in all (None: until the player quits).

    Returns:
        The current (last) episode's ``{"env", "seed", "steps", "return", "won", "done"}`` and
        ``episodes``, the number of episodes started.

    Raises:
        ValueError: an unknown environment or constructor arguments it does not take.
    """
    from lamina.envs import make

    try:
        env = make(env_name, **env_kwargs)
    except TypeError as err:  # an argument the constructor does not take
        raise ValueError(f"bad env.kwargs for {env_name}: {err}") from None
    env_id = env.spec.id if env.spec is not None else env_name
    total_steps, episodes = 0, 0
    try:

        def reset(new_seed: int) -> tuple[Episode, dict[str, Any]]:
            nonlocal episodes
            observation, info = env.reset(seed=new_seed)
            episodes += 1
            print_fn(f"=== {env_id} | seed {new_seed} ===")
            print_fn(f"Task: {info.get('task', '')}")
            _show(print_fn, observation, info)
            return Episode(new_seed), info

        print_fn(HELP)
        episode, info = reset(seed)
        while max_steps is None or total_steps < max_steps:
            try:
                line = input_fn(PROMPT)
            except (EOFError, KeyboardInterrupt):
                print_fn("")
                break
            command = line.strip()
            if command == ":q":
                break
            if command in (":h", ":help", "?"):
                print_fn(HELP)
                continue
            if command == ":r" or command.startswith(":r "):
                argument = command[2:].strip()
                if argument and not argument.lstrip("-").isdecimal():
                    print_fn(f"':r {argument}': a seed is an integer")
                    continue
                episode, info = reset(int(argument) if argument else episode.seed)
                continue
            if command == ":e":
                expert = env.unwrapped.expert_action() if hasattr(env.unwrapped, "expert_action") else None
                print_fn(f"Expert: {expert}" if expert is not None else "Expert: no action to suggest.")
                continue
            if command.startswith(":"):
                print_fn(f"unknown command {command!r}. {HELP}")
                continue
            if not command:  # a bare Enter is not an action: it would spend a step as an invalid one
                continue
            if episode.done:
                print_fn("The episode is over: :r plays again, :q quits.")
                continue
            admissible = info.get("admissible_actions")
            action = choose_action(line, admissible)
            if action is None:
                print_fn(f"no action number {command}; choose 1..{len(admissible or [])}")
                continue
            info = _take_step(env, action, episode, print_fn)
            total_steps += 1
        else:
            print_fn(f"Stopped after max_steps={max_steps} steps.")
    finally:
        env.close()
    return {
        "env": env_id,
        "seed": episode.seed,
        "steps": episode.steps,
        "return": episode.episode_return,
        "won": episode.won,
        "done": episode.done,
        "episodes": episodes,
    }


def _take_step(env: Any, action: str, episode: Episode, print_fn: Callable[[str], Any]) -> dict[str, Any]:
    """Steps the environment, updates the episode and shows the result; returns the new info."""
    observation, reward, terminated, truncated, info = env.step(action)
    episode.steps += 1
    episode.episode_return += float(reward)
    episode.won = bool(info.get("won", False))
    episode.done = bool(terminated or truncated)
    print_fn(f"Action: {action}")
    _show(print_fn, observation, info)
    print_fn(_status(float(reward), episode, info, bool(truncated)))
    if episode.done:
        print_fn("The episode is over: :r plays again, :q quits.")
    return info


def parse_play_overrides(overrides: Sequence[str]) -> tuple[str, dict[str, Any], int, int | None]:
    """``env=NAME seed=N max_steps=N env.kwargs.KEY=VALUE ...`` -> (env, kwargs, seed, max_steps).

    Values use Hydra's override grammar, as ``lamina train`` does: ``[7,7]``, ``{level:2}``,
    ``null``, ``true``, numbers, or plain strings.

    Raises:
        ValueError: on a malformed override, an unknown key or a missing ``env=``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ValueError(f"bad override: {str(err).strip().splitlines()[0]}") from None
    env_name, seed, max_steps, kwargs = None, 0, None, {}
    for override in parsed:
        key = override.key_or_group
        if override.is_sweep_override() or override.is_delete() or override.is_add():
            raise ValueError(f"{override.input_line!r}: play takes plain key=value overrides")
        value = override.value()
        if key == "env":
            env_name = str(value)
        elif key in ("seed", "max_steps"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{key}={value!r}: expected an integer")
            if key == "seed":
                seed = value
            else:
                max_steps = value
        elif key.startswith("env.kwargs.") and len(key) > len("env.kwargs."):
            kwargs[key[len("env.kwargs.") :]] = value
        else:
            raise ValueError(f"unknown key {key!r}; valid: env, seed, max_steps, env.kwargs.<argument>")
    if env_name is None:
        raise ValueError("which environment? e.g. lamina play env=sokoban (lamina envs lists them)")
    return env_name, kwargs, seed, max_steps


def apply_preset(env_name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An ``env=`` preset of ``configs/env/`` (``textworld_hard``, ``sokoban_ragen``, ...) becomes its
    environment and constructor arguments, so ``lamina play env=X`` plays what ``lamina train env=X``
    trains on; ``env.kwargs.KEY=VALUE`` still wins. Unset (null) preset arguments are left to the
    constructor's defaults. Any other name is an environment name, passed through."""
    from omegaconf import OmegaConf

    from lamina.compose import config_dir, group_options

    if env_name not in group_options("env"):
        return env_name, kwargs
    preset = OmegaConf.to_container(OmegaConf.load(config_dir() / "env" / f"{env_name}.yaml"), resolve=True)
    assert isinstance(preset, dict)
    defaults = {k: v for k, v in (preset.get("kwargs") or {}).items() if v is not None}
    return str(preset["name"]), {**defaults, **kwargs}


def _read_line(prompt: str) -> str:
    """``input``, looked up when called (so tests can replace ``builtins.input``)."""
    return input(prompt)


def cmd_play(overrides: Sequence[str]) -> int:
    """``lamina play env=NAME [seed=N] [max_steps=N] [env.kwargs.KEY=VALUE ...]``.

    Returns:
        0, or 2 after printing ``lamina: error: ...`` for a bad command line (as ``lamina.cli``
        does for a ``UsageError``; handled here so that ``python -m lamina.cli`` behaves the same).
    """
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())

    try:
        env_name, kwargs, seed, max_steps = parse_play_overrides(overrides)
        env_name, kwargs = apply_preset(env_name, kwargs)
        summary = play(env_name, kwargs, seed=seed, input_fn=_read_line, max_steps=max_steps)
    except (ValueError, FileNotFoundError) as err:  # unknown env, bad arguments, missing data
        print(f"lamina: error: {err}", file=sys.stderr)
        return 2
    outcome = "won" if summary["won"] else "not won"
    print(f"{summary['env']}: {summary['steps']} steps, return {summary['return']:g}, {outcome}")
    return 0
