"""The ``lamina`` command: ``lamina <subcommand> [hydra overrides]``.

lamina train                                   the default job (TextWorld, GRPO, SmolLM2, middle block)
lamina train env=textworld layers=[15] trainer.iterations=10
lamina envs                                    registered environments
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = """usage: lamina <command> [key=value ...]

commands:
  train     train an agent               lamina train env=textworld algorithm=grpo layers=[15]
  eval      held-out evaluation          lamina eval checkpoint=runs/default | model=smollm2-135m [env=...]
  sweep     layer study                  lamina sweep study.layers=[0,7,15,22,29] study.seeds=[0,1]
  compare   compare two sweeps           lamina compare runs/sweep-a runs/sweep-b [out=DIR]
  weights   weight change per block      lamina weights runs/sweep/full-seed0 [out=DIR]
  play      play an environment yourself lamina play env=sokoban [seed=N] [env.kwargs.KEY=VALUE]
  envs      list registered environments
  bench     the benchmark table          lamina bench [--quick] [only=update,rollout] [out=FILE]
  export    a run as an HF model folder  lamina export checkpoint=runs/default out=exported/default
  sft       supervised warm start        lamina sft env=alfworld agent.mode=generate sft.episodes=32
"""


class UsageError(Exception):
    """A bad command line; printed as one line, exit status 2."""


def config_dir() -> Path:
    import lamina.configs

    return Path(lamina.configs.__file__).parent


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose_config(overrides: Sequence[str], config_name: str = "train"):
    """Composes ``configs/<config_name>.yaml`` with overrides into a typed ``RunConfig``."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lamina.trainer.config import RunConfig

    for override in overrides:
        group, _, value = override.partition("=")
        if group in ("env", "algorithm", "model") and value and value not in group_options(group):
            raise UsageError(f"unknown {group} {value!r}; valid: {', '.join(group_options(group))}")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            raw = compose(config_name=config_name, overrides=list(overrides))
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), raw)
        return OmegaConf.to_object(merged)
    except (HydraException, OmegaConfBaseException) as err:
        raise UsageError(explain_override_error(err, overrides, config_name)) from None


def known_keys(config_name: str = "train") -> list[str]:
    """Every dotted key of the composed default config (for "did you mean")."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        raw = compose(config_name=config_name)
    keys: list[str] = []

    def visit(node, prefix: str) -> None:
        for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else []:
            dotted = f"{prefix}{key}"
            keys.append(dotted)
            if isinstance(value, DictConfig):
                visit(value, dotted + ".")

    visit(raw, "")
    return keys


def explain_override_error(err: Exception, overrides: Sequence[str], config_name: str = "train") -> str:
    """One line naming the bad key and value, with what is valid (or the closest known key)."""
    import difflib
    import re

    text = str(err).strip()
    values = dict(o.lstrip("+").split("=", 1) for o in overrides if "=" in o)
    full_key = getattr(err, "full_key", None)
    if full_key:
        expected = re.search(r"converted to (\w+)", text)
        kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
            expected.group(1) if expected else "", "a value of the right type"
        )
        return f"{full_key}={values.get(full_key, '?')!s}: not {kind}; valid: {kind}"
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        close = difflib.get_close_matches(key, known_keys(config_name), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"see `lamina {config_name} --help` for the keys"
        return f"unknown key {key!r} ({key}={values.get(key, '?')}); {hint}"
    return f"bad override: {text.splitlines()[0]}"


def cmd_train(overrides: Sequence[str]) -> int:
    from lamina.trainer.train import train

    cfg = compose_config(overrides)
    out = train(cfg)
    print(training_summary(out))
    return 0


def training_summary(out: Path) -> str:
    """The held-out result, base -> trained with 95% intervals, and where the files are."""
    import json

    def line(name: str) -> str | None:
        path = out / name
        if not path.exists():
            return None
        r = json.loads(path.read_text())
        low, high = r["ci95"]
        return f"{r['success_rate']:.1%} (95% CI {low:.1%}-{high:.1%}, {r['episodes']} episodes)"

    base, trained = line("eval_base.json"), line("eval.json")
    lines = []
    if base and trained:
        lines.append(f"held-out success: base {base} -> trained {trained}")
    elif trained:
        lines.append(f"held-out success: {trained}")
    files = ", ".join(p.name for p in sorted(out.iterdir()) if not p.name.startswith("."))
    lines.append(f"done: {out} ({files})")
    return "\n".join(lines)


def cmd_envs(overrides: Sequence[str]) -> int:
    import gymnasium as gym

    from lamina.envs import registered_envs
    from lamina.envs.registry import SHORT_NAMES

    env_ids = registered_envs()  # loads plugins, which adds their short names
    short = {v: k for k, v in SHORT_NAMES.items()}
    for env_id in env_ids:
        spec = gym.spec(env_id)
        print(f"{env_id:28s} {short.get(env_id, ''):12s} {spec.entry_point}")
    return 0


def cmd_play(overrides: Sequence[str]) -> int:
    from lamina.play import cmd_play as run_play

    return run_play(overrides)


def cmd_export(overrides: Sequence[str]) -> int:
    from lamina.export import export_checkpoint, parse_export_args

    try:
        args = parse_export_args(overrides)
        out = export_checkpoint(args["checkpoint"], args["out"])
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"exported: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def cmd_sft(overrides: Sequence[str]) -> int:
    from lamina.trainer.sft import compose_sft_config, sft

    out = sft(compose_sft_config(overrides))
    print(f"done: {out} (start RL from it: lamina train init_from={out})")
    return 0


def cmd_eval(overrides: Sequence[str]) -> int:
    from lamina.trainer.evaluate_cli import run_evaluation

    special = ("checkpoint", "ensemble", "out")
    picked = {k: v for k, _, v in (o.partition("=") for o in overrides) if k in special}
    rest = [o for o in overrides if o.partition("=")[0] not in picked]
    overridden = {o.partition("=")[0].lstrip("+").split(".")[0] for o in rest}
    if "checkpoint" in picked and "ensemble" in picked:
        raise UsageError("give checkpoint=DIR or ensemble=SWEEP:K, not both")
    if ("checkpoint" in picked or "ensemble" in picked) and any(o.startswith("model") for o in rest):
        raise UsageError("the model comes from checkpoint=/ensemble=; leave out model=... there")
    cfg = compose_config(rest)
    try:
        out = run_evaluation(
            cfg, picked.get("checkpoint"), picked.get("ensemble"), picked.get("out"), overridden
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"written: {out}")
    return 0


def _paths_and_out(overrides: Sequence[str], count: int, usage: str) -> tuple[list[str], str | None]:
    """``count`` positional paths and an optional ``out=DIR``; else a usage error."""
    paths = [a for a in overrides if not a.startswith("out=")]
    outs = [a[4:] for a in overrides if a.startswith("out=")]
    if len(paths) != count or len(outs) > 1:
        raise UsageError(f"got {' '.join(overrides) or 'no arguments'}; usage: {usage}")
    return paths, (outs[0] if outs else None)


def cmd_sweep(overrides: Sequence[str]) -> int:
    from lamina.study.config import compose_sweep_config
    from lamina.study.sweep import run_sweep

    out = run_sweep(compose_sweep_config(overrides))
    print(f"done: {out} (contribution.csv, contribution.md, contribution.png)")
    return 0


def cmd_compare(overrides: Sequence[str]) -> int:
    from lamina.study.compare import compare_sweeps

    (a, b), out = _paths_and_out(overrides, 2, "lamina compare SWEEP_A SWEEP_B [out=DIR]")
    try:
        result = compare_sweeps(Path(a), Path(b), Path(out) if out else None)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print((Path(result["out"]) / "compare.md").read_text())
    print(f"written: {result['out']} (compare.json, compare.md, compare.png)")
    return 0


def cmd_weights(overrides: Sequence[str]) -> int:
    from lamina.study.weights import write_weight_change

    (run,), out = _paths_and_out(overrides, 1, "lamina weights RUN_OR_CHECKPOINT [out=DIR]")
    try:
        folder = write_weight_change(run, out)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print((folder / "weight_change.md").read_text())
    print(f"written: {folder} (weight_change.csv, weight_change.md, weight_change.png)")
    return 0


def cmd_bench(overrides: Sequence[str]) -> int:
    from lamina.benchmark import run_bench

    try:
        print(run_bench(overrides))
    except ValueError as err:
        raise UsageError(str(err)) from None
    return 0


COMMANDS = {
    "bench": cmd_bench,
    "train": cmd_train,
    "eval": cmd_eval,
    "envs": cmd_envs,
    "play": cmd_play,
    "export": cmd_export,
    "sft": cmd_sft,
    "sweep": cmd_sweep,
    "compare": cmd_compare,
    "weights": cmd_weights,
}


CONFIG_NAMES = {"train": "train", "eval": "train", "sft": "sft", "sweep": "sweep"}


def command_help(command: str) -> str:
    """``lamina <command> --help``: its usage line and, for config-driven commands, the config
    groups with their options and every key with its default."""
    line = next((ln for ln in USAGE.splitlines() if ln.strip().startswith(command + " ")), "")
    parts = [f"usage: lamina {command} [key=value ...]", "", line.strip()]
    config_name = CONFIG_NAMES.get(command)
    if config_name is None:
        return "\n".join(parts)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    parts += ["", "config groups (group=option):"]
    parts += [f"  {group:10s} {', '.join(group_options(group))}" for group in ("env", "algorithm", "model")]
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        raw = compose(config_name=config_name)
    flat = OmegaConf.to_container(raw, resolve=False)
    parts += ["", "keys and their defaults (key=value):"]

    def visit(node: dict, prefix: str, depth: int) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value and depth < 2:
                visit(value, f"{prefix}{key}.", depth + 1)
            else:
                parts.append(f"  {prefix}{key}={value}")

    visit(flat, "", 0)
    parts += ["", "Lists and dicts are Hydra values: layers=[14,15] trainer.lr_multipliers={15:2.0}"]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    from lamina.errors import ConfigError, TrainingStopped

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, overrides = args[0], args[1:]
    try:
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}")
        if any(arg in ("-h", "--help") for arg in overrides):
            print(command_help(command))
            return 0
        return COMMANDS[command](overrides)
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
