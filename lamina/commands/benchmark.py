"""``lamina bench``: one Markdown table from the modules in the checkout's ``bench/`` folder.

    lamina bench                       the full table (SmolLM2-135M; 29 min on 2 idle cores with TRL)
    lamina bench --quick               the tiny random model (CI checks every ratio is finite)
    lamina bench only=update,rollout   some modules; out=FILE also writes the table there

Every row compares lamina with a baseline measured in the same run (see ``bench/common.py``).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lamina.errors import UsageError

# Module of bench/ -> what it measures; the table keeps this order.
MODULES = {
    "update": "update phase: one block vs all blocks (time, peak memory)",
    "iteration": "default-job iteration before vs after the optimizations",
    "rollout": "batched rollout vs one call per episode",
    "precision": "bfloat16 vs float32: update time and log-prob error",
    "trl": "GRPO iteration vs TRL's GRPOTrainer",
    "vllm": "vLLM rollouts vs HF generate; weight sync, one block vs all",
    "envs": "environment steps/s vs the raw engines",
}
HEADER = ["what", "baseline", "lamina", "ratio", "target", "met"]


def bench_root() -> Path:
    """The source checkout's root (``bench/`` lives beside the ``lamina`` package, not inside it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__init__.py").exists():
        raise ValueError(
            f"lamina bench runs from a source checkout: no bench/ folder beside {Path(__file__).parent} "
            "(git clone the repository and pip install -e '.[bench]')"
        )
    return root


def parse_bench_args(args: Sequence[str]) -> tuple[bool, list[str], Path | None]:
    quick, only, out = False, list(MODULES), None
    for arg in args:
        key, _, value = arg.partition("=")
        if arg == "--quick":
            quick = True
        elif key == "only" and value:
            only = [m.strip() for m in value.split(",") if m.strip()]
            unknown = [m for m in only if m not in MODULES]
            if unknown:
                raise ValueError(f"only={value}: unknown module {unknown[0]!r}; valid: {', '.join(MODULES)}")
        elif key == "out" and value:
            out = Path(value)
        else:
            raise ValueError(f"unknown argument {arg!r}; valid: --quick, only=MODULE[,MODULE], out=FILE")
    return quick, only, out


def markdown(rows, machine: str) -> str:
    lines = ["| " + " | ".join([*HEADER, "machine"]) + " |", "|" + " --- |" * (len(HEADER) + 1)]
    lines += ["| " + " | ".join([*row.cells(), machine]) + " |" for row in rows]
    return "\n".join(lines)


def run_bench(args: Sequence[str]) -> str:
    quick, only, out = parse_bench_args(args)
    root = str(bench_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench.common import machine

    rows = []
    for name in only:
        print(f"bench {name}: {MODULES[name]} ...", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        try:
            new = module.rows(quick)
        except ImportError as err:  # an optional baseline (TRL) that is not installed
            print(f"bench {name}: skipped: {err}", file=sys.stderr)
            continue
        rows += new
        print(f"bench {name}: {len(new)} rows in {time.perf_counter() - begin:.0f} s", file=sys.stderr)
    table = markdown(rows, machine())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")
    bad = [row.what for row in rows if not math.isfinite(row.ratio)]
    if bad:
        raise RuntimeError(f"non-finite ratio in: {'; '.join(bad)}")
    return table


def cmd_bench(overrides: Sequence[str]) -> int:
    try:
        print(run_bench(overrides))
    except ValueError as err:
        raise UsageError(str(err)) from None
    return 0
