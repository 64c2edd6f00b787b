"""``lamina compare`` and ``lamina weights``: reading finished sweeps and runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lamina.errors import UsageError


def paths_and_out(overrides: Sequence[str], count: int, usage: str) -> tuple[list[str], str | None]:
    """``count`` positional paths and an optional ``out=DIR``; else a usage error."""
    paths = [a for a in overrides if not a.startswith("out=")]
    outs = [a[4:] for a in overrides if a.startswith("out=")]
    if len(paths) != count or len(outs) > 1:
        raise UsageError(f"got {' '.join(overrides) or 'no arguments'}; usage: {usage}")
    return paths, (outs[0] if outs else None)


def cmd_compare(overrides: Sequence[str]) -> int:
    """Two sweeps: their rank correlation; one sweep: its rank stability across seeds."""
    from lamina.study.compare import compare_sweeps, seed_rank_stability

    usage = "lamina compare SWEEP_A SWEEP_B [out=DIR]  or  lamina compare SWEEP [out=DIR] (across seeds)"
    if len([a for a in overrides if not a.startswith("out=")]) == 1:
        (one,), out = paths_and_out(overrides, 1, usage)
        try:
            stability = seed_rank_stability(Path(one), Path(out) if out else None)
        except ValueError as err:
            raise UsageError(str(err)) from None
        print((Path(stability["out"]) / "rank_stability.md").read_text())
        print(f"written: {stability['out']} (rank_stability.json, rank_stability.md)")
        return 0
    (a, b), out = paths_and_out(overrides, 2, usage)
    try:
        result = compare_sweeps(Path(a), Path(b), Path(out) if out else None)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print((Path(result["out"]) / "compare.md").read_text())
    print(f"written: {result['out']} (compare.json, compare.md, compare.png)")
    return 0


def cmd_weights(overrides: Sequence[str]) -> int:
    from lamina.study.weights import write_weight_change

    (run,), out = paths_and_out(overrides, 1, "lamina weights RUN_OR_CHECKPOINT [out=DIR]")
    try:
        folder = write_weight_change(run, out)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print((folder / "weight_change.md").read_text())
    print(f"written: {folder} (weight_change.csv, weight_change.md, weight_change.png)")
    return 0
