"""The ``lamina`` command: ``lamina <command> [arguments]``. It only parses and dispatches; each
command lives in ``lamina.commands`` and is imported when it runs, so ``--help`` and a refused
override answer before torch is imported.

lamina train                                   the default job (TextWorld, GRPO, SmolLM2, middle block)
lamina train env=textworld layers=[15] trainer.iterations=10
lamina envs                                    registered environments and presets
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lamina.commands.train import compose_config
from lamina.errors import ConfigError, TrainingStopped, UsageError

__all__ = ["COMMANDS", "UsageError", "command_help", "compose_config", "main"]


@dataclass(frozen=True)
class Command:
    """One subcommand: where it lives, its one-line summary and usage, its own arguments (name,
    meaning) and, for config-driven commands, the config it composes (``configs/<config>.yaml``)."""

    target: str  # "module:function"
    summary: str
    usage: str
    arguments: tuple[tuple[str, str], ...] = ()
    config: str | None = None


OVERRIDES = ("key=value ...", "Hydra overrides of the config below, e.g. env=alfworld layers=[14]")

COMMANDS: dict[str, Command] = {
    "train": Command(
        "lamina.commands.train:cmd_train",
        "train an agent",
        "lamina train [key=value ...]",
        (OVERRIDES,),
        "train",
    ),
    "eval": Command(
        "lamina.commands.evaluate:cmd_eval",
        "held-out evaluation",
        "lamina eval [checkpoint=DIR | ensemble=SWEEP:K | model=NAME] [out=DIR] [key=value ...]",
        (
            ("checkpoint=DIR", "a run or checkpoint folder; its model, env, agent and rollout are used"),
            ("ensemble=SWEEP:K", "the K best single-block arms of a finished sweep, voting"),
            ("model=NAME", "without checkpoint/ensemble: the base model (smollm2-135m, tiny-random)"),
            ("out=DIR", "where eval.json and config.yaml go (default: inside the run or sweep)"),
            OVERRIDES,
        ),
        "train",
    ),
    "sweep": Command(
        "lamina.commands.train:cmd_sweep",
        "layer study",
        "lamina sweep [key=value ...]",
        (OVERRIDES,),
        "sweep",
    ),
    "compare": Command(
        "lamina.commands.study:cmd_compare",
        "compare two sweeps, or one sweep's seeds",
        "lamina compare SWEEP_A SWEEP_B [out=DIR]  or  lamina compare SWEEP [out=DIR]",
        (
            ("SWEEP_A SWEEP_B", "two finished sweep folders (each with contribution.csv)"),
            ("SWEEP", "one finished sweep: Spearman rank stability of its arms across seeds"),
            ("out=DIR", "where compare.json, compare.md and compare.png go (default: beside SWEEP_A)"),
        ),
    ),
    "weights": Command(
        "lamina.commands.study:cmd_weights",
        "weight change per block",
        "lamina weights RUN_OR_CHECKPOINT [out=DIR]",
        (
            ("RUN_OR_CHECKPOINT", "a run folder (its newest checkpoint) or one checkpoint folder"),
            ("out=DIR", "where weight_change.csv/.md/.png go (default: the run folder)"),
        ),
    ),
    "play": Command(
        "lamina.commands.play:cmd_play",
        "play an environment yourself",
        "lamina play env=NAME [seed=N] [max_steps=N] [env.kwargs.KEY=VALUE ...]",
        (
            ("env=NAME", "an environment or an env preset (lamina envs lists both)"),
            ("seed=N", "the first episode's seed (default 0)"),
            ("max_steps=N", "stop after N steps in all (default: until :q)"),
            ("env.kwargs.KEY=VALUE", "a constructor argument of the environment"),
        ),
    ),
    "envs": Command(
        "lamina.commands.envs:cmd_envs",
        "list environments and presets",
        "lamina envs",
    ),
    "bench": Command(
        "lamina.commands.benchmark:cmd_bench",
        "the benchmark table",
        "lamina bench [--quick] [only=MODULE,...] [out=FILE]",
        (
            ("--quick", "the tiny random model instead of SmolLM2 (minutes instead of half an hour)"),
            ("only=MODULE,...", "some of: update, iteration, rollout, precision, trl, envs"),
            ("out=FILE", "also write the Markdown table there"),
        ),
    ),
    "export": Command(
        "lamina.commands.export:cmd_export",
        "a run as an HF model folder",
        "lamina export checkpoint=DIR out=DIR",
        (
            ("checkpoint=DIR", "a run or checkpoint folder"),
            ("out=DIR", "the new Hugging Face model folder (must not exist or be empty)"),
        ),
    ),
    "sft": Command(
        "lamina.commands.train:cmd_sft",
        "supervised warm start",
        "lamina sft [key=value ...]",
        (OVERRIDES,),
        "sft",
    ),
}

EXAMPLES = {
    "train": "lamina train env=textworld algorithm=grpo layers=[15]",
    "eval": "lamina eval checkpoint=runs/default | model=smollm2-135m [env=...]",
    "sweep": "lamina sweep study.layers=[0,7,15,22,29] study.seeds=[0,1]",
    "compare": "lamina compare runs/sweep-a runs/sweep-b [out=DIR]",
    "weights": "lamina weights runs/sweep/full-seed0 [out=DIR]",
    "play": "lamina play env=sokoban [seed=N] [env.kwargs.KEY=VALUE]",
    "envs": "lamina envs",
    "bench": "lamina bench [--quick] [only=update,rollout] [out=FILE]",
    "export": "lamina export checkpoint=runs/default out=exported/default",
    "sft": "lamina sft env=alfworld agent.mode=generate sft.episodes=32",
}

USAGE = (
    "usage: lamina <command> [arguments]\n\ncommands:\n"
    + "\n".join(f"  {name:9s} {command.summary:29s} {EXAMPLES[name]}" for name, command in COMMANDS.items())
    + "\n\nlamina <command> --help lists a command's arguments"
    + " (and, for train/eval/sweep/sft, its config keys).\n"
)


def command_help(name: str) -> str:
    """``lamina <command> --help``: its usage, its own arguments and, for config-driven commands,
    the config groups with their options and every key with its default."""
    command = COMMANDS[name]
    parts = [f"usage: {command.usage}", "", f"{command.summary}; e.g. {EXAMPLES[name]}"]
    if command.arguments:
        width = max(len(arg) for arg, _ in command.arguments)
        parts += ["", "arguments:"] + [f"  {arg:{width}s}  {meaning}" for arg, meaning in command.arguments]
    if command.config is not None:
        parts += ["", *config_help(command.config)]
    return "\n".join(parts)


def config_help(config_name: str) -> list[str]:
    """The config groups with their options and every key of ``configs/<config_name>.yaml``."""
    from omegaconf import OmegaConf

    from lamina.compose import compose_raw, group_options

    groups = ("env", "algorithm", "model") + (("study",) if config_name == "sweep" else ())
    parts = ["config groups (group=option):"]
    parts += [f"  {group:10s} {', '.join(group_options(group))}" for group in groups]
    flat = OmegaConf.to_container(compose_raw(config_name), resolve=False)
    parts += ["", "keys and their defaults (key=value):"]

    def visit(node: dict, prefix: str, depth: int) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value and depth < 2:
                visit(value, f"{prefix}{key}.", depth + 1)
            else:
                parts.append(f"  {prefix}{key}={value}")

    assert isinstance(flat, dict)
    visit(flat, "", 0)
    parts += ["", "Lists and dicts are Hydra values: layers=[14,15] trainer.lr_multipliers={15:2.0}"]
    return parts


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    name, arguments = args[0], args[1:]
    try:
        if name not in COMMANDS:
            raise UsageError(f"unknown command {name!r}; valid: {', '.join(COMMANDS)}")
        if any(arg in ("-h", "--help") for arg in arguments):
            print(command_help(name))
            return 0
        module, _, function = COMMANDS[name].target.partition(":")
        return getattr(importlib.import_module(module), function)(arguments)
    except (UsageError, ConfigError) as err:
        print(f"lamina: error: {err}", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(f"lamina: stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lamina: stopped at once; the checkpoints written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
