"""The command line a newcomer meets: fast refusals, each command's own --help, the env listing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lamina.cli import COMMANDS, command_help, main

# Run in a fresh interpreter: is torch (or transformers, verl) imported by the time a bad command
# line is refused?
REFUSAL = """
import sys
from lamina.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers", "verl", "ray") if m in sys.modules)
print(code, ",".join(heavy) or "-")
"""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "trainer.iteratons=3"], "did you mean trainer.iterations?"),
        (["train", "trainer.iterations=many"], "trainer.iterations=many: not an integer"),
        (["train", "env=alfwrld"], "unknown env 'alfwrld'; valid: alfworld"),
        (["eval", "rollout.groupsize=2"], "did you mean rollout.group_size?"),
        (["sweep", "study=nope"], "unknown study 'nope'"),
        (["sft", "sft.epoks=1"], "did you mean sft.epochs?"),
    ],
)
def test_a_bad_override_is_refused_before_any_heavy_import(argv, message):
    result = subprocess.run(
        [sys.executable, "-c", REFUSAL, *argv], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["2", "-"], result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_help_names_its_own_arguments(name, capsys):
    assert main([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {COMMANDS[name].usage}\n")
    for argument, _ in COMMANDS[name].arguments:
        assert f"  {argument}" in text
    assert ("keys and their defaults" in text) == (COMMANDS[name].config is not None)


def test_help_of_the_commands_that_take_no_config():
    assert "checkpoint=DIR" in command_help("eval") and "ensemble=SWEEP:K" in command_help("eval")
    assert "key=value" not in command_help("compare") and "SWEEP_A SWEEP_B" in command_help("compare")
    assert "study.layers=" in command_help("sweep") and "sft.episodes=" in command_help("sft")


def test_envs_lists_the_presets_too(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for preset in ("textworld_hard", "sokoban_ragen", "frozenlake_ragen", "alfworld", "webshop"):
        assert any(line.split()[0] == preset for line in out.splitlines() if line.strip()), preset
    assert "textworld, 8 steps; challenge=tw-treasure_hunter, settings={'level': 3}" in out


def test_weights_names_its_own_argument(capsys, tmp_path):
    assert main(["weights", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "RUN_OR_CHECKPOINT" in err and "checkpoint=" not in err
