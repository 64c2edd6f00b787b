"""Which differences between a sweep's arms are resolved, and what it would take to resolve the rest.

A difference S_a - S_b is *resolved* when its paired bootstrap interval (``lamina.study.stats``:
seeds and episodes resampled together, the same draws for both arms) excludes 0.

For an unresolved pair, the number of seeds or episodes that would resolve it comes from the
normal approximation of a paired two-sided test at level alpha with power 1 - beta:

    n = ((z_{1 - alpha/2} + z_{1 - beta}) * sigma / delta)^2

delta is the observed difference; sigma the standard deviation (ddof 1) of the paired differences
of one unit: for seeds, the per-seed differences d_s = mean_e (x_se - y_se) over the shared
episodes; for episodes, d_e = mean_s (x_se - y_se) over the shared seeds (each holding the other
dimension at its present size, so it counts only that dimension's noise). ``scale`` is the factor
by which both seeds and episodes would grow: ((z_{1-alpha/2} + z_{1-beta}) * se_boot / delta)^2,
with se_boot the bootstrap standard error of the difference at the present size (every variance
component shrinks at least as fast as 1/scale when both grow). With 80% power and alpha = 0.05,
z-sum = 1.96 + 0.84 = 2.80. These are planning numbers: delta is the observed value, which
overstates small true effects (the "winner's curse"); read them as orders of magnitude.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from lamina.study.contribution import arm_replicates
from lamina.study.stats import percentile_interval

DIFFERENCE_COLUMNS = (
    "arm_a",
    "arm_b",
    "difference",
    "difference_lo",
    "difference_hi",
    "resolved",
    "seeds",
    "episodes",
    "seeds_needed",
    "episodes_needed",
    "scale_needed",
)


def required_n(sigma: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """n = ((z_{1-alpha/2} + z_{power}) sigma / delta)^2, rounded up; inf when delta is 0, NaN when
    sigma is not finite."""
    if not math.isfinite(sigma):
        return float("nan")
    if delta == 0:
        return float("inf")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return float(math.ceil((z * sigma / delta) ** 2 - 1e-9))


@dataclass
class Difference:
    """One pair of arms: S_a - S_b with its paired bootstrap interval, and the sizes that would
    resolve it (``*_needed``: totals, not increments; NaN where not estimable)."""

    arm_a: str
    arm_b: str
    difference: float
    difference_lo: float
    difference_hi: float
    resolved: bool
    seeds: int
    episodes: int
    seeds_needed: float
    episodes_needed: float
    scale_needed: float


def paired_difference(
    runs_a: dict[int, np.ndarray],
    runs_b: dict[int, np.ndarray],
    labels: tuple[str, str],
    replicates: int = 2000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    power: float = 0.8,
) -> Difference | None:
    """S_a - S_b on the seeds both arms finished (None if none); see the module docstring.

    Args:
        runs_a, runs_b: ``{seed: (E,) per-episode scores}`` on the same episodes.
        labels: the arms' names.
        power: 1 - beta of the planning numbers; alpha = 1 - ``confidence``.
    """
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return None
    a, a_b = arm_replicates(runs_a, seeds, replicates, bootstrap_seed)
    b, b_b = arm_replicates(runs_b, seeds, replicates, bootstrap_seed)
    diff_b = a_b - b_b
    lo, hi = percentile_interval(diff_b, confidence)
    delta = a - b
    resolved = bool(lo > 0 or hi < 0)
    d = np.stack([runs_a[s] for s in seeds]) - np.stack([runs_b[s] for s in seeds])  # (S, E)
    alpha = 1 - confidence
    sigma_seed = float(d.mean(axis=1).std(ddof=1)) if len(seeds) > 1 else float("nan")
    sigma_episode = float(d.mean(axis=0).std(ddof=1)) if d.shape[1] > 1 else float("nan")
    se_boot = float(np.std(diff_b, ddof=1))
    return Difference(
        labels[0],
        labels[1],
        delta,
        lo,
        hi,
        resolved,
        len(seeds),
        d.shape[1],
        required_n(sigma_seed, delta, alpha, power),
        required_n(sigma_episode, delta, alpha, power),
        _scale(se_boot, delta, alpha, power),
    )


def _scale(se: float, delta: float, alpha: float, power: float) -> float:
    if delta == 0:
        return float("inf")
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return float((z * se / delta) ** 2)


def arm_label(key: str | int) -> str:
    """``block 7`` for a block index, else the arm's own name."""
    return f"block {key}" if isinstance(key, int) else str(key)


def all_differences(
    arms: dict[str | int, dict[int, np.ndarray]],
    replicates: int = 2000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    power: float = 0.8,
) -> list[Difference]:
    """Every pair of arms, in the order the arms are given (``a`` before ``b``)."""
    out = []
    for ka, kb in itertools.combinations(list(arms), 2):
        diff = paired_difference(
            arms[ka], arms[kb], (arm_label(ka), arm_label(kb)), replicates, confidence, bootstrap_seed, power
        )
        if diff is not None:
            out.append(diff)
    return out


def find_pair(differences: Sequence[Difference], a: str, b: str) -> Difference | None:
    """The difference of arms named ``a`` and ``b`` (either order; ``7`` or ``block 7``), signed
    as ``a - b``; None when that pair is not in the list."""

    def name(x: str) -> str:
        return f"block {int(x)}" if str(x).strip().isdigit() else str(x).strip()

    a, b = name(a), name(b)
    for d in differences:
        if (d.arm_a, d.arm_b) == (a, b):
            return d
        if (d.arm_a, d.arm_b) == (b, a):
            return Difference(
                a, b, -d.difference, -d.difference_hi, -d.difference_lo, d.resolved, d.seeds, d.episodes,
                d.seeds_needed, d.episodes_needed, d.scale_needed,
            )  # fmt: skip
    return None


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def differences_csv(differences: Sequence[Difference]) -> str:
    """``differences.csv``: one row per pair (empty cells where not estimable)."""
    lines = [",".join(DIFFERENCE_COLUMNS)]
    lines += [",".join(_cell(getattr(d, c)) for c in DIFFERENCE_COLUMNS) for d in differences]
    return "\n".join(lines) + "\n"


def power_markdown(
    differences: Sequence[Difference], chosen: Difference | None, confidence: float, power: float
) -> list[str]:
    """The power section of ``contribution.md``: resolved pairs, and the chosen pair's needs."""
    level = f"{confidence:.0%}"
    resolved = [d for d in differences if d.resolved]
    lines = [
        "## Which differences are resolved",
        "",
        f"{len(resolved)} of {len(differences)} pairwise differences have a {level} paired bootstrap "
        "interval that excludes 0 (all pairs in `differences.csv`)" + (":" if resolved else "."),
        "",
    ]
    if resolved:
        lines += ["| pair | S_a - S_b |", "|---|---|"]
        lines += [
            f"| {d.arm_a} - {d.arm_b} | {d.difference:+.3f} "
            f"[{d.difference_lo:+.3f}, {d.difference_hi:+.3f}] |"
            for d in resolved
        ]
        lines.append("")
    if chosen is not None:
        verdict = "resolved" if chosen.resolved else "not resolved"
        lines += [
            f"Chosen pair {chosen.arm_a} - {chosen.arm_b}: {chosen.difference:+.3f} "
            f"[{chosen.difference_lo:+.3f}, {chosen.difference_hi:+.3f}], {verdict} with {chosen.seeds} "
            f"seed(s) x {chosen.episodes} episodes. To detect a difference of this size with "
            f"{power:.0%} power at alpha = {1 - confidence:.2f} (normal approximation, "
            "n = ((z_{1-a/2} + z_{1-b}) sigma / delta)^2): "
            f"{_need(chosen.seeds_needed, 'seeds')} (episodes as now), "
            f"{_need(chosen.episodes_needed, 'episodes')} (seeds as now), or both grown "
            f"{_cell(chosen.scale_needed)}x.",
            "",
        ]
    return lines


def _need(value: float, unit: str) -> str:
    if math.isnan(value):
        return f"{unit}: not estimable (one {unit[:-1]} only)"
    if math.isinf(value):
        return f"{unit}: no number suffices (the observed difference is 0)"
    return f"{int(value)} {unit}"


def ordered_keys(keys) -> list:
    """Arms in table order: base, full, blocks by index, then any other arm by name."""
    keys = list(keys)
    head = [k for k in ("base", "full") if k in keys]
    blocks = sorted(k for k in keys if isinstance(k, int))
    rest = sorted(str(k) for k in keys if not isinstance(k, int) and k not in ("base", "full"))
    return head + blocks + rest


@dataclass
class SweepPower:
    """A sweep's pairwise differences and the pair it plans for."""

    differences: list[Difference]
    chosen: Difference | None
    confidence: float
    power: float

    def markdown(self, table) -> list[str]:
        """The sections ``contribution.md`` gets after its main table: forgetting and cost per arm,
        then the resolved differences and the chosen pair's plan."""
        from lamina.study.contribution import details_markdown

        return [
            *details_markdown(table),
            *power_markdown(self.differences, self.chosen, self.confidence, self.power),
        ]

    def summary(self) -> dict:
        """For ``summary.json``: the resolved pairs and the chosen pair's numbers."""

        def plain(d: Difference) -> dict:
            return {
                c: (None if isinstance(v, float) and math.isnan(v) else v)
                for c, v in ((c, getattr(d, c)) for c in DIFFERENCE_COLUMNS)
            }

        return {
            "power": self.power,
            "pairs": len(self.differences),
            "resolved": [[d.arm_a, d.arm_b] for d in self.differences if d.resolved],
            "chosen": plain(self.chosen) if self.chosen is not None else None,
        }


def sweep_power(scores, table, study) -> SweepPower:
    """Every pairwise difference of a sweep's arms, and the plan for ``study.power_pair`` (default:
    the best block against full).

    Args:
        scores: the sweep's ``lamina.study.contribution.Scores``.
        table: its ``ContributionTable`` (for the best block).
        study: the ``StudyConfig`` (bootstrap, confidence, power, power_pair).
    """
    arms = {k: scores.arms[k] for k in ordered_keys(scores.arms)}
    differences = all_differences(arms, study.bootstrap, study.confidence, study.bootstrap_seed, study.power)
    if study.power_pair:
        pair = [str(x) for x in study.power_pair]
    else:
        best = table.best or (table.block_rows[0] if table.block_rows else None)
        pair = [str(best.block), "full"] if best is not None else []
    chosen = find_pair(differences, pair[0], pair[1]) if pair else None
    return SweepPower(differences, chosen, study.confidence, study.power)
