"""``lamina train``, ``lamina sft`` and ``lamina sweep``: compose the config, run, print where the
results are."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lamina.compose import compose
from lamina.trainer.config import RunConfig


def compose_config(overrides: Sequence[str], config_name: str = "train") -> RunConfig:
    """``configs/<config_name>.yaml`` with Hydra overrides as a typed ``RunConfig``."""
    return compose(config_name, overrides, RunConfig)


def cmd_train(overrides: Sequence[str]) -> int:
    from lamina.backend import train

    out = train(compose_config(overrides))
    print(training_summary(out))
    return 0


def training_summary(out: Path) -> str:
    """The held-out result, base -> trained with 95% intervals, and where the files are."""

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


def cmd_sft(overrides: Sequence[str]) -> int:
    from lamina.trainer.config import SftRunConfig

    cfg = compose("sft", overrides, SftRunConfig)
    from lamina.trainer.sft import sft  # torch and transformers: only once the config is good

    out = sft(cfg)
    print(f"done: {out} (start RL from it: lamina train init_from={out})")
    return 0


def cmd_sweep(overrides: Sequence[str]) -> int:
    from lamina.study.config import compose_sweep_config

    cfg = compose_sweep_config(overrides)
    from lamina.study.sweep import run_sweep  # torch and transformers: only once the config is good

    out = run_sweep(cfg)
    print(f"done: {out} (contribution.csv, contribution.md, contribution.png, arms.png)")
    return 0
