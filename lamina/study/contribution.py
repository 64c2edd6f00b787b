"""Layer contribution C(k) = (S_k - S_base) / (S_full - S_base), with bootstrap intervals.

S is an arm's held-out score (success rate, or mean return with ``metric="return"``) averaged over
its seeds and episodes. Intervals come from one bootstrap over seeds and episodes shared by every
arm (``lamina.study.stats``). When the bootstrap interval of S_full - S_base does not lie above
zero, full RL did not measurably beat the base model and C would divide by noise: the table then
reports S only and says so.

    table = contribution_table(load_scores("runs/sweep", "success"), num_blocks=30)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from lamina.study.arms import is_finished, parse_arm_name
from lamina.study.stats import bootstrap_counts, percentile_interval, resampled_means

CSV_COLUMNS: tuple[str, ...] = (
    "block",
    "depth",
    "score",
    "score_lo",
    "score_hi",
    "contribution",
    "contribution_lo",
    "contribution_hi",
    "seeds",
    "episodes",
)
# Forgetting (lamina.study.forgetting) and cost per arm, means over the arm's finished seeds;
# empty where not measured. other_success_lo/hi: the bootstrap interval over seeds and episodes.
EXTRA_COLUMNS = (
    "kl_to_base",
    "kl_base_to_trained",
    "other_success",
    "other_success_lo",
    "other_success_hi",
    "wall_s",
    "update_s",
    "trainable_parameters",
    "update_flops_per_token",
    "peak_memory_mb",
)
CSV_COLUMNS = CSV_COLUMNS + EXTRA_COLUMNS


@dataclass
class Scores:
    """Every finished arm's per-episode scores on the episodes all of them share.

    ``arms[key][seed]`` is an (E,) array, ``key`` being ``"base"``, ``"full"`` or a block index;
    ``episode_seeds`` (E,) the held-out task seeds, the same for every arm.
    """

    metric: str
    arms: dict[str | int, dict[int, np.ndarray]]
    episode_seeds: list[int]
    dropped_episodes: int = 0  # episodes some arm lacks, left out of every arm


def arm_key(arm) -> str | int:
    """The table key of a ``lamina.study.arms.Arm``: its block index, else its kind."""
    return cast(int, arm.block) if arm.kind == "block" else arm.kind  # a block arm has one


def episode_values(result: dict, metric: str) -> dict[int, float]:
    """``{episode seed: value}`` of one ``eval.json``: won as 0/1, or the episode return."""
    values = result["won"] if metric == "success" else result["returns"]
    return {int(s): float(v) for s, v in zip(result["seeds"], values, strict=True)}


def load_scores(sweep_dir: Path, metric: str) -> Scores:
    """Reads the ``eval.json`` of every finished arm folder in the sweep.

    Raises:
        ValueError: no finished arm, an ``eval.json`` without per-episode results, or no held-out
            episode that every arm played.
    """
    per_arm: dict[str | int, dict[int, dict[int, float]]] = {}
    for run_dir in sorted(Path(sweep_dir).iterdir()) if Path(sweep_dir).is_dir() else []:
        arm = parse_arm_name(run_dir.name)
        if arm is None or not is_finished(run_dir):
            continue
        result = json.loads((run_dir / "eval.json").read_text())
        if not {"seeds", "won", "returns"} <= set(result):
            raise ValueError(f"{run_dir / 'eval.json'} has no per-episode results (seeds, won, returns)")
        key = arm_key(arm)
        per_arm.setdefault(key, {})[arm.seed] = episode_values(result, metric)
    if not per_arm:
        raise ValueError(
            f"{sweep_dir} holds no finished arm (a run folder such as base-seed0/ with eval.json)"
        )
    all_runs = [values for seeds in per_arm.values() for values in seeds.values()]
    shared = sorted(set.intersection(*(set(v) for v in all_runs)))
    if not shared:
        raise ValueError(
            f"the arms of {sweep_dir} share no held-out episode; were they run with other eval seeds?"
        )
    dropped = max(len(v) for v in all_runs) - len(shared)
    arms = {
        key: {seed: np.array([values[e] for e in shared]) for seed, values in seeds.items()}
        for key, seeds in per_arm.items()
    }
    return Scores(metric, arms, shared, dropped)


@dataclass
class Row:
    """One line of the contribution table; NaN where a value is not defined."""

    block: str | int
    depth: float
    score: float
    score_lo: float
    score_hi: float
    contribution: float
    contribution_lo: float
    contribution_hi: float
    seeds: int
    episodes: int
    kl_to_base: float = float("nan")
    kl_base_to_trained: float = float("nan")
    other_success: float = float("nan")
    other_success_lo: float = float("nan")
    other_success_hi: float = float("nan")
    wall_s: float = float("nan")
    update_s: float = float("nan")
    trainable_parameters: float = float("nan")
    update_flops_per_token: float = float("nan")
    peak_memory_mb: float = float("nan")

    def csv_values(self) -> list[str]:
        return [(_fmt_g if c in EXTRA_COLUMNS else _fmt)(getattr(self, c)) for c in CSV_COLUMNS]


@dataclass
class ContributionTable:
    """The rows (base, full, then blocks by index) and the verdict on S_full - S_base."""

    metric: str
    num_blocks: int
    rows: list[Row]
    gap: float
    gap_lo: float
    gap_hi: float
    degenerate: bool
    confidence: float
    replicates: int
    notes: list[str] = field(default_factory=list)

    @property
    def block_rows(self) -> list[Row]:
        return [r for r in self.rows if isinstance(r.block, int)]

    def row(self, key: str | int) -> Row | None:
        return next((r for r in self.rows if r.block == key), None)

    @property
    def best(self) -> Row | None:
        """The block with the highest S (the highest C when C is defined); None when every block
        scored the same."""
        rows = [r for r in self.block_rows if math.isfinite(r.score)]
        if not rows or (len(rows) > 1 and len({r.score for r in rows}) == 1):
            return None
        return max(rows, key=lambda r: r.score)

    def verdict(self) -> str:
        """One plain sentence on whether C can be read."""
        word = "success" if self.metric == "success" else "return"
        gap = f"S_full - S_base = {self.gap:.3f} [{self.gap_lo:.3f}, {self.gap_hi:.3f}]"
        if self.degenerate:
            return (
                f"{gap} is not clearly above zero: full RL did not measurably beat the base model on "
                f"held-out {word}, so C(k) would divide by noise and is not reported. Read S(k) against "
                "S_base and S_full directly, or train longer / evaluate more episodes."
            )
        return f"{gap} ({self.confidence:.0%} bootstrap interval) is above zero, so C(k) is reported."


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def _fmt_g(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def depth_fraction(block: int, num_blocks: int) -> float:
    """Relative depth of a block: 0 for the first, 1 for the last."""
    return block / (num_blocks - 1) if num_blocks > 1 else 0.0


def _matrix(runs: dict[int, np.ndarray], seeds: Sequence[int]) -> np.ndarray:
    return np.stack([runs[s] for s in seeds])  # (S, E)


def arm_replicates(
    runs: dict[int, np.ndarray], seeds: Sequence[int], replicates: int, bootstrap_seed: int
) -> tuple[float, np.ndarray]:
    """An arm's point score and its (B,) bootstrap replicates over the given seeds and all episodes.

    The draws depend only on ``bootstrap_seed`` and the matrix shape, so arms evaluated on the same
    seeds and episodes get the same draws (paired replicates).
    """
    matrix = _matrix(runs, seeds)
    rng = np.random.default_rng(bootstrap_seed)
    seed_counts = bootstrap_counts(rng, matrix.shape[0], replicates)
    episode_counts = bootstrap_counts(rng, matrix.shape[1], replicates)
    return float(matrix.mean()), resampled_means(matrix, seed_counts, episode_counts)


def contribution_table(
    scores: Scores,
    num_blocks: int,
    replicates: int = 2000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
) -> ContributionTable:
    """The contribution table of a sweep's scores.

    Each block's S, C and intervals use the seeds that block, base and full all finished; base and
    full rows and the gap use the seeds both of them finished.

    Raises:
        ValueError: base or full has no finished seed in common.
    """
    arms = scores.arms
    if "base" not in arms or "full" not in arms:
        missing = [k for k in ("base", "full") if k not in arms]
        raise ValueError(
            f"the contribution needs the base and full arms; not finished yet: {', '.join(missing)}"
        )
    ref_seeds = sorted(set(arms["base"]) & set(arms["full"]))
    if not ref_seeds:
        raise ValueError("the base and full arms share no finished seed")
    episodes = len(scores.episode_seeds)
    base, base_b = arm_replicates(arms["base"], ref_seeds, replicates, bootstrap_seed)
    full, full_b = arm_replicates(arms["full"], ref_seeds, replicates, bootstrap_seed)
    gap_lo, gap_hi = percentile_interval(full_b - base_b, confidence)
    degenerate = not (full - base > 0 and gap_lo > 0)
    nan = float("nan")
    rows = [
        Row(
            "base",
            nan,
            base,
            *percentile_interval(base_b, confidence),
            0.0,
            nan,
            nan,
            len(ref_seeds),
            episodes,
        ),
        Row(
            "full",
            nan,
            full,
            *percentile_interval(full_b, confidence),
            1.0,
            nan,
            nan,
            len(ref_seeds),
            episodes,
        ),
    ]
    if degenerate:
        rows[0].contribution = rows[1].contribution = nan
    notes = []
    if scores.dropped_episodes:
        notes.append(f"{scores.dropped_episodes} held-out episodes not played by every arm were left out")
    # Single blocks by index, then the extra arms of study.arms (lamina.study.arms) by label.
    extra = sorted(k for k in arms if isinstance(k, str) and k not in ("base", "full"))
    order: list[str | int] = [*sorted(k for k in arms if isinstance(k, int)), *extra]
    for block in order:
        name = f"block {block}" if isinstance(block, int) else block
        seeds = sorted(set(arms[block]) & set(ref_seeds))
        if not seeds:
            notes.append(f"{name}: no finished seed shared with base and full; left out")
            continue
        s_k, s_k_b = arm_replicates(arms[block], seeds, replicates, bootstrap_seed)
        row = Row(
            block,
            depth_fraction(block, num_blocks) if isinstance(block, int) else nan,
            s_k,
            *percentile_interval(s_k_b, confidence),
            nan,
            nan,
            nan,
            len(seeds),
            episodes,
        )
        if not degenerate:
            row.contribution, (row.contribution_lo, row.contribution_hi), dropped = _contribution(
                arms, seeds, s_k, s_k_b, replicates, bootstrap_seed, confidence
            )
            if dropped:
                notes.append(
                    f"{name}: {dropped} of {replicates} replicates had S_full <= S_base "
                    "and were left out of its C interval"
                )
        rows.append(row)
    return ContributionTable(
        scores.metric,
        num_blocks,
        rows,
        full - base,
        gap_lo,
        gap_hi,
        degenerate,
        confidence,
        replicates,
        notes,
    )


def _contribution(arms, seeds, s_k, s_k_b, replicates, bootstrap_seed, confidence):
    """C(k), its interval over the replicates whose S_full > S_base, and how many were left out."""
    base, base_b = arm_replicates(arms["base"], seeds, replicates, bootstrap_seed)
    full, full_b = arm_replicates(arms["full"], seeds, replicates, bootstrap_seed)
    gap_b = full_b - base_b
    usable = gap_b > 0
    c_b = (s_k_b[usable] - base_b[usable]) / gap_b[usable]
    return (s_k - base) / (full - base), percentile_interval(c_b, confidence), int((~usable).sum())


def write_csv(table: ContributionTable, path: Path) -> Path:
    """``contribution.csv``: base, full, then one row per block (empty cells where undefined)."""
    lines = [",".join(CSV_COLUMNS)] + [",".join(r.csv_values()) for r in table.rows]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def _interval(value: float, lo: float, hi: float) -> str:
    if not math.isfinite(value):
        return "-"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(table: ContributionTable, title: str = "Layer contribution") -> str:
    """``contribution.md``: the verdict, the table and the best block."""
    metric = "held-out success rate" if table.metric == "success" else "mean held-out return"
    level = f"{table.confidence:.0%}"
    lines = [
        f"# {title}",
        "",
        f"S = {metric}; C(k) = (S_k - S_base) / (S_full - S_base); [{level} bootstrap interval over "
        f"held-out episodes and seeds, {table.replicates} replicates]. Model depth L = {table.num_blocks}.",
        "",
        table.verdict(),
        "",
        "| arm | depth | S | C | seeds | episodes |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.rows:
        depth = f"{r.depth:.2f}" if math.isfinite(r.depth) else ""
        name = f"block {r.block}" if isinstance(r.block, int) else r.block
        lines.append(
            f"| {name} | {depth} | {_interval(r.score, r.score_lo, r.score_hi)} | "
            f"{_interval(r.contribution, r.contribution_lo, r.contribution_hi)} | {r.seeds} | {r.episodes} |"
        )
    best = table.best
    if best is not None:
        lines += [
            "",
            f"Best single block: {best.block} (depth {best.depth:.2f}), S = "
            f"{_interval(best.score, best.score_lo, best.score_hi)}"
            + (
                ""
                if table.degenerate
                else f", C = {_interval(best.contribution, best.contribution_lo, best.contribution_hi)}"
            )
            + ".",
        ]
    if best is None and len(table.block_rows) > 1:
        lines += ["", "Every block scored the same S: no best block."]
    lines += [f"\nNote: {note}." for note in table.notes]
    return "\n".join(lines) + "\n"


def summary(table: ContributionTable) -> dict:
    """``summary.json``: the numbers a comparison or a report needs without re-reading the runs."""

    def row_dict(r: Row | None) -> dict | None:
        if r is None:
            return None
        return {
            c: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for c, v in ((c, getattr(r, c)) for c in CSV_COLUMNS)
        }

    best = table.best
    return {
        "metric": table.metric,
        "num_blocks": table.num_blocks,
        "gap": [table.gap, table.gap_lo, table.gap_hi],
        "degenerate": table.degenerate,
        "verdict": table.verdict(),
        "confidence": table.confidence,
        "replicates": table.replicates,
        "base": row_dict(table.row("base")),
        "full": row_dict(table.row("full")),
        "best": row_dict(best),
        "notes": table.notes,
    }


def arm_cost(run_dir: Path) -> dict[str, float]:
    """What an arm's training cost, from its ``metrics.jsonl``: ``wall_s`` (rollouts + updates,
    summed over iterations), ``update_s``, ``peak_memory_mb`` (the largest of the iterations), and
    ``trainable_parameters`` / ``update_flops_per_token`` (``lamina.trainer.telemetry``). An arm
    that trained nothing costs 0 (its peak memory is not measured)."""
    rows = []
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind", "train") == "train"]
    nan = float("nan")
    if not rows:
        return {"wall_s": 0.0, "update_s": 0.0, "trainable_parameters": 0.0, "update_flops_per_token": 0.0}
    peaks = [float(r["peak_memory_mb"]) for r in rows if "peak_memory_mb" in r]
    return {
        "wall_s": float(sum(r.get("rollout_s", 0.0) + r.get("update_s", 0.0) for r in rows)),
        "update_s": float(sum(r.get("update_s", 0.0) for r in rows)),
        "trainable_parameters": float(rows[-1].get("trainable_parameters", nan)),
        "update_flops_per_token": float(rows[-1].get("update_flops_per_token", nan)),
        "peak_memory_mb": max(peaks) if peaks else nan,
    }


def add_arm_details(
    table: ContributionTable,
    sweep_dir: Path,
    replicates: int = 2000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
) -> ContributionTable:
    """Fills the ``EXTRA_COLUMNS`` of the table's rows from the finished arm folders: cost from
    ``metrics.jsonl``, forgetting from ``forgetting.json`` (``lamina.study.forgetting``). Values
    are means over the arm's finished seeds; ``other_success`` has a bootstrap interval over seeds
    and the other environment's episodes (the same episodes for every arm)."""
    costs: dict[str | int, list[dict[str, float]]] = {}
    forgetting: dict[str | int, dict[int, dict]] = {}
    for run_dir in sorted(Path(sweep_dir).iterdir()) if Path(sweep_dir).is_dir() else []:
        arm = parse_arm_name(run_dir.name)
        if arm is None or not is_finished(run_dir):
            continue
        key = arm_key(arm)
        costs.setdefault(key, []).append(arm_cost(run_dir))
        if (run_dir / "forgetting.json").exists():
            forgetting.setdefault(key, {})[arm.seed] = json.loads((run_dir / "forgetting.json").read_text())
    shared_other: set[int] | None = None
    for per_seed in forgetting.values():
        for result in per_seed.values():
            if "other_seeds" in result:
                seeds = set(result["other_seeds"])
                shared_other = seeds if shared_other is None else shared_other & seeds
    for row in table.rows:
        for column in (
            "wall_s",
            "update_s",
            "trainable_parameters",
            "update_flops_per_token",
            "peak_memory_mb",
        ):
            values = [c[column] for c in costs.get(row.block, []) if column in c and math.isfinite(c[column])]
            if values:
                setattr(row, column, float(np.mean(values)))
        per_seed = forgetting.get(row.block, {})
        for column in ("kl_to_base", "kl_base_to_trained"):
            values = [r[column] for r in per_seed.values() if r.get(column) is not None]
            if values:
                setattr(row, column, float(np.mean(values)))
        runs = {
            seed: np.array(
                [float(w) for e, w in zip(r["other_seeds"], r["other_won"], strict=True) if e in shared_other]
            )
            for seed, r in per_seed.items()
            if "other_seeds" in r and shared_other
        }
        if runs:
            score, score_b = arm_replicates(runs, sorted(runs), replicates, bootstrap_seed)
            row.other_success = score
            row.other_success_lo, row.other_success_hi = percentile_interval(score_b, confidence)
    return table


def details_markdown(table: ContributionTable) -> list[str]:
    """The forgetting and cost table of ``contribution.md`` (its columns with a value only)."""
    columns = [
        ("kl_to_base", "KL(trained ‖ base)", "{:.4f}"),
        ("kl_base_to_trained", "KL(base ‖ trained)", "{:.4f}"),
        ("other_success", "success on other env", None),
        ("wall_s", "train wall s", "{:.1f}"),
        ("update_s", "update s", "{:.1f}"),
        ("trainable_parameters", "trainable params", "{:,.0f}"),
        ("update_flops_per_token", "update FLOPs/token", "{:.3g}"),
        ("peak_memory_mb", "peak memory MiB", "{:.0f}"),
    ]
    shown = [c for c in columns if any(math.isfinite(getattr(r, c[0])) for r in table.rows)]
    if not shown:
        return []
    lines = [
        "## Forgetting and cost per arm",
        "",
        "Means over each arm's seeds. KL: mean per decision on held-out tasks of the trained environment, "
        "in the states the trained policy visits (`lamina.study.forgetting`); update FLOPs per token "
        "= 4 P_traversed + 2 P_trainable (`lamina.trainer.telemetry`).",
        "",
        "| arm | " + " | ".join(title for _, title, _ in shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for r in table.rows:
        name = f"block {r.block}" if isinstance(r.block, int) else r.block
        cells = []
        for column, _, fmt in shown:
            value = getattr(r, column)
            if column == "other_success":
                cells.append(_interval(value, r.other_success_lo, r.other_success_hi))
            else:
                cells.append((fmt or "{}").format(value) if math.isfinite(value) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]
