"""``lamina play``: a scripted player wins Sokoban with the expert's hints, by number and by text."""

from __future__ import annotations

import re

import pytest

import lamina.envs as lamina_envs
from lamina.commands.play import apply_preset, choose_action, cmd_play, parse_play_overrides, play

SEED = 0
JUNK_LINE = "<action>jump over the box</action>"


class ScriptedPlayer:
    """Answers ``play``'s prompts by reading what it printed: asks ``:e`` for a hint, then plays the
    hinted move, alternating between its number and its text, with one junk line; quits once won."""

    def __init__(self) -> None:
        self.printed: list[str] = []
        self.typed: list[str] = []
        self._junk_sent = False
        self._by_number = True

    def print(self, text: str = "") -> None:
        self.printed.append(str(text))

    def output(self) -> str:
        return "\n".join(self.printed)

    def _last_actions(self) -> list[str]:
        block = next(t for t in reversed(self.printed) if t.startswith("Actions:"))
        return [re.sub(r"^\s*\d+\. ", "", line) for line in block.splitlines()[1:]]

    def input(self, prompt: str) -> str:
        line = self._next_line()
        self.typed.append(line)
        return line

    def _next_line(self) -> str:
        last = self.printed[-1]
        if any(re.search(r"\bwon True\b", t) for t in self.printed[-3:]) or len(self.typed) > 200:
            return ":q"
        if len(self.typed) == 3 and not self._junk_sent:
            self._junk_sent = True
            return JUNK_LINE
        if not last.startswith("Expert: "):
            return ":e"
        hint = last.removeprefix("Expert: ")
        self._by_number = not self._by_number
        if not self._by_number:
            return str(self._last_actions().index(hint) + 1)
        return f"  {hint.upper()} "


def test_scripted_player_wins_sokoban_with_the_expert() -> None:
    player = ScriptedPlayer()
    summary = play("sokoban", {}, seed=SEED, input_fn=player.input, print_fn=player.print)

    assert summary["won"] is True and summary["done"] is True and summary["episodes"] == 1
    assert summary["env"] == "lamina/Sokoban-v0" and summary["seed"] == SEED
    assert summary["return"] == pytest.approx(-0.1 * summary["steps"] + 11)
    assert player.typed[-1] == ":q"
    numbers = [t for t in player.typed if t.isdecimal()]
    texts = [t for t in player.typed if t.strip().lower() in ("up", "down", "left", "right")]
    assert numbers and texts and JUNK_LINE in player.typed
    assert summary["steps"] == len(numbers) + len(texts) + 1  # the junk line is a (wasted) step

    out = player.output()
    start, info = lamina_envs.make("sokoban").reset(seed=SEED)
    assert start in out and f"Task: {info['task']}" in out
    assert "Actions:\n  1. up\n  2. down\n  3. left\n  4. right" in out
    assert "invalid action" in out and "Invalid action" in out  # the junk line, and the env's reason
    assert "won True" in out and "you won!" in out and "won False" in out
    assert "done True" in out


def test_reset_expert_and_bad_numbers() -> None:
    player = ScriptedPlayer()
    lines = iter(["9", ":e", "up", ":r", ":r 5", ":r x", ":z", ":h", ":q"])
    summary = play("sokoban", {}, seed=1, input_fn=lambda p: next(lines), print_fn=player.print)
    out = player.output()
    assert "no action number 9; choose 1..4" in out and "Expert: " in out
    assert out.count("=== lamina/Sokoban-v0 | seed 1 ===") == 2 and "seed 5 ===" in out
    assert "a seed is an integer" in out and "unknown command ':z'" in out
    assert summary == {
        "env": "lamina/Sokoban-v0",
        "seed": 5,
        "steps": 0,
        "return": 0.0,
        "won": False,
        "done": False,
        "episodes": 3,
    }


def test_numbers_are_answers_where_the_action_space_is_open() -> None:
    assert choose_action("2", None) == "2" and choose_action("2", ["a", "b"]) == "b"
    assert choose_action("3", ["a", "b"]) is None and choose_action(" a ", ["a"]) == " a "
    assert choose_action("12", ["11", "12", "13"]) == "12" and choose_action("2", ["11", "12"]) == "12"
    env = lamina_envs.make("arithmetic")
    env.reset(seed=4)
    answer = env.unwrapped.expert_action()
    player = ScriptedPlayer()
    lines = iter([answer, "more", ":q"])
    summary = play("arithmetic", {}, seed=4, input_fn=lambda p: next(lines), print_fn=player.print)
    assert summary["won"] and summary["steps"] == 1 and summary["return"] == 1.0
    assert "Actions: free text" in player.output() and "The episode is over" in player.output()


def test_end_of_input_and_max_steps_stop_the_session() -> None:
    def eof(prompt: str) -> str:
        raise EOFError

    assert play("frozenlake", {}, seed=0, input_fn=eof, print_fn=lambda t: None)["steps"] == 0
    printed: list[str] = []
    summary = play("frozenlake", {"size": 3}, input_fn=lambda p: "up", print_fn=printed.append, max_steps=2)
    assert summary["steps"] == 2 and printed[-1] == "Stopped after max_steps=2 steps."


def test_overrides_are_parsed_with_hydra_grammar() -> None:
    env, kwargs, seed, max_steps = parse_play_overrides(
        ["env=textworld", "seed=3", "env.kwargs.settings={level:2}", "env.kwargs.dim=[7,7]", "max_steps=4"]
    )
    assert (env, kwargs, seed, max_steps) == ("textworld", {"settings": {"level": 2}, "dim": [7, 7]}, 3, 4)
    for bad, match in [
        ([], "which environment"),
        (["env=sokoban", "seed=x"], "expected an integer"),
        (["env=sokoban", "colour=red"], "unknown key 'colour'"),
        (["env=sokoban", "seed=1,2"], "plain key=value"),
        (["env=sokoban", "env.kwargs.x=[1,"], "bad override"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_play_overrides(bad)


def test_cmd_play(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    lines = iter(["right", ":q"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert cmd_play(["env=sokoban", "seed=0", "env.kwargs.num_boxes=1"]) == 0
    assert "lamina/Sokoban-v0: 1 steps" in capsys.readouterr().out
    assert cmd_play(["env=zork"]) == 2
    assert re.match(r"lamina: error: unknown environment 'zork'; valid: .*sokoban", capsys.readouterr().err)
    assert cmd_play(["env=sokoban", "env.kwargs.colour=red"]) == 2
    assert "lamina: error: bad env.kwargs for sokoban" in capsys.readouterr().err


def test_a_bare_enter_is_not_an_action() -> None:
    player = ScriptedPlayer()
    lines = iter(["", "   ", ":q"])
    summary = play("sokoban", {}, seed=1, input_fn=lambda p: next(lines), print_fn=player.print)
    assert summary["steps"] == 0 and "Action:" not in player.output()


def test_env_presets_play_what_training_plays(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert apply_preset("sokoban_ragen", {"num_boxes": 2}) == (
        "sokoban",
        {
            "dim_room": [6, 6],
            "num_boxes": 2,
            "generator": "gym_sokoban",
            "search_depth": 300,
            "symbols": "ragen",
        },
    )
    assert apply_preset("qa", {}) == ("qa", {})  # an unset (null) argument is left to the constructor
    assert apply_preset("Sokoban-v0", {"x": 1}) == ("Sokoban-v0", {"x": 1})  # not a preset: unchanged
    lines = iter(["1", ":q"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert cmd_play(["env=frozenlake_ragen", "seed=0"]) == 0
    assert "lamina/FrozenLake-v0: 1 steps" in capsys.readouterr().out
