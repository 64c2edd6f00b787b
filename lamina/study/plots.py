"""Pictures of a layer study: C over depth, every arm side by side, the comparison of two sweeps,
weight change over depth."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from lamina.study.contribution import ContributionTable, Scores  # noqa: E402
from lamina.study.power import arm_label  # noqa: E402


def _errors(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(2, n) non-negative error-bar lengths; 0 where an interval is undefined."""
    below = np.where(np.isfinite(lo), values - lo, 0.0)
    above = np.where(np.isfinite(hi), hi - values, 0.0)
    return np.clip(np.stack([below, above]), 0.0, None)


def _bar_width(depth: np.ndarray) -> float:
    """80% of the closest spacing between bars, at most 0.06 of the depth axis."""
    gaps = np.diff(np.sort(depth))
    return float(min(0.8 * gaps.min(), 0.06)) if len(gaps) and gaps.min() > 0 else 0.06


def plot_contribution(table: ContributionTable, path: Path, title: str = "") -> Path:
    """Bars of C(k) over relative depth with their intervals, the C = 1 (full) and C = 0 (base)
    lines, and the best block named. When C is not defined (S_full ~ S_base) it plots S(k) with
    the base and full scores as bands instead, and says so in the title."""
    rows = table.block_rows
    depth = np.array([r.depth for r in rows])
    forgetting = any(math.isfinite(r.kl_to_base) or math.isfinite(r.other_success) for r in table.rows)
    if forgetting:
        fig, (ax, lower) = plt.subplots(
            2, 1, figsize=(8, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
        )
    else:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    best = table.best
    if not table.degenerate:
        values = np.array([r.contribution for r in rows])
        lo = np.array([r.contribution_lo for r in rows])
        hi = np.array([r.contribution_hi for r in rows])
        ax.axhline(1.0, color="tab:green", linestyle="--", label="full RL (C = 1)")
        ax.axhline(0.0, color="tab:gray", linestyle="--", label="base model (C = 0)")
        ax.set_ylabel("contribution C(k)")
        heading = "C(k) = (S_k - S_base) / (S_full - S_base)"
    else:
        values = np.array([r.score for r in rows])
        lo = np.array([r.score_lo for r in rows])
        hi = np.array([r.score_hi for r in rows])
        for key, color in (("full", "tab:green"), ("base", "tab:gray")):
            ref = table.row(key)
            assert ref is not None  # contribution_table() always makes the base and full rows
            ax.axhline(ref.score, color=color, linestyle="--", label=f"{key} (S = {ref.score:.3f})")
            if math.isfinite(ref.score_lo):
                ax.axhspan(ref.score_lo, ref.score_hi, color=color, alpha=0.12)
        ax.set_ylabel("held-out success S(k)" if table.metric == "success" else "held-out return S(k)")
        heading = "S_full - S_base not clearly > 0: C not defined, S(k) shown"
    colors = ["tab:orange" if best is not None and r.block == best.block else "tab:blue" for r in rows]
    ax.bar(
        depth,
        values,
        width=_bar_width(depth),
        color=colors,
        yerr=_errors(values, lo, hi),
        capsize=3,
    )
    if best is not None:
        i = rows.index(best)
        top = hi[i] if math.isfinite(hi[i]) else values[i]
        kind = "S" if table.degenerate else "C"
        ax.annotate(
            f"best: block {best.block} ({kind} = {values[i]:.2f})",
            (best.depth, top),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=9,
            color="tab:orange",
        )
        ax.set_ylim(top=max(ax.get_ylim()[1], top + 0.12 * (ax.get_ylim()[1] - ax.get_ylim()[0])))
    blocks_axis = ax.secondary_xaxis("top")
    blocks_axis.set_xticks(depth, [str(r.block) for r in rows], fontsize=7)
    blocks_axis.set_xlabel("block", fontsize=8)
    ax.set_xlim(-0.06, 1.06)
    ax.set_xlabel(f"relative depth (block / {table.num_blocks - 1})")
    if forgetting:
        _plot_forgetting(lower, table, depth)
    ax.set_title((title + "\n" if title else "") + heading, fontsize=10)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color="tab:blue", label=f"block alone ({table.confidence:.0%} interval)"))
    if best is not None:
        handles.append(Patch(color="tab:orange", label="best block"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def arm_points(table: ContributionTable, scores: Scores) -> list[tuple[str, float, list[float]]]:
    """``(arm name, pooled S, [S of each seed, by seed])`` for every row of the table, in order."""
    out = []
    for row in table.rows:
        per_seed = scores.arms.get(row.block, {})
        out.append((arm_label(row.block), row.score, [float(per_seed[s].mean()) for s in sorted(per_seed)]))
    return out


def plot_arms(table: ContributionTable, scores: Scores, path: Path, title: str = "") -> Path:
    """Every arm's pooled held-out S with its interval (the extra arms, LoRA and top-K, beside
    the blocks, which the C(k)-over-depth chart cannot place) and each seed's own S as a dot, so
    a seed that carries a pooled number shows."""
    rows = table.rows
    points = arm_points(table, scores)
    values = np.array([pooled for _, pooled, _ in points])
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    reference = {"base": "tab:gray", "full": "tab:green"}
    colors = [reference.get(str(r.block), "tab:blue") for r in rows]
    errors = _errors(values, np.array([r.score_lo for r in rows]), np.array([r.score_hi for r in rows]))
    ax.barh(y, values, color=colors, alpha=0.55, xerr=errors, capsize=3)
    for yi, (_, _, per_seed) in zip(y, points, strict=True):
        ax.scatter(per_seed, [yi] * len(per_seed), color="black", s=14, zorder=3)
    ax.set_yticks(y, [name for name, _, _ in points])
    metric = "held-out success S" if table.metric == "success" else "held-out return S"
    ax.set_xlabel(f"{metric} (bar: pooled, {table.confidence:.0%} interval; dots: one seed each)")
    ax.set_title((title + "\n" if title else "") + "every arm, pooled over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _plot_forgetting(ax, table: ContributionTable, depth: np.ndarray) -> None:
    """The forgetting panel: KL(trained || base) per block (bars, left axis; full RL's as a dashed
    line) and the success on the environment no arm trained on (points with intervals, right axis;
    base and full as lines)."""
    rows = table.block_rows
    full, base = table.row("full"), table.row("base")
    kl = np.array([r.kl_to_base for r in rows])
    handles = []
    if np.isfinite(kl).any():
        handles.append(
            ax.bar(depth, np.nan_to_num(kl), width=_bar_width(depth), color="tab:purple", alpha=0.6,
                   label="KL(trained || base), block alone")
        )  # fmt: skip
        if full is not None and math.isfinite(full.kl_to_base):
            handles.append(
                ax.axhline(full.kl_to_base, color="tab:purple", linestyle="--", label="KL of full RL")
            )
    ax.set_ylabel("KL to base on the trained task")
    ax.set_xlabel(f"relative depth (block / {table.num_blocks - 1})")
    other = np.array([r.other_success for r in rows])
    if np.isfinite(other).any():
        twin = ax.twinx()
        lo = np.array([r.other_success_lo for r in rows])
        hi = np.array([r.other_success_hi for r in rows])
        handles.append(
            twin.errorbar(depth, other, yerr=_errors(other, lo, hi), fmt="o", color="tab:red", capsize=3,
                          label="success on the other env")
        )  # fmt: skip
        for ref, color in ((base, "tab:gray"), (full, "tab:green")):
            if ref is not None and math.isfinite(ref.other_success):
                handles.append(
                    twin.axhline(
                        ref.other_success, color=color, linestyle=":", label=f"{ref.block} on the other env"
                    )
                )
        twin.set_ylabel("success on the other env")
        twin.set_ylim(-0.03, 1.03)
    ax.set_title("forgetting: KL to the base model and success on an untrained environment", fontsize=9)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best")


def plot_comparison(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    a_err: np.ndarray,
    b_err: np.ndarray,
    labels: Sequence[str],
    names: tuple[str, str],
    quantity: str,
    caption: str,
    path: Path,
) -> Path:
    """Scatter of the matched blocks' values in sweep A (x) against sweep B (y), with intervals
    (``*_err`` (2, n) error-bar lengths), each point labelled, and the identity line."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.errorbar(a, b, xerr=a_err, yerr=b_err, fmt="o", color="tab:blue", ecolor="tab:gray", capsize=2)
    for x, y, label in zip(a, b, labels, strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    lo = float(np.nanmin([*a, *b]))
    hi = float(np.nanmax([*a, *b]))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="tab:gray", linestyle=":", label="A = B")
    ax.set_xlabel(f"{quantity} in {names[0]}")
    ax.set_ylabel(f"{quantity} in {names[1]}")
    ax.set_title(textwrap.fill(caption, 70), fontsize=9)  # a one-line caption overflowed the figure
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_weight_change(rows: Sequence[dict], num_blocks: int, path: Path, title: str = "") -> Path:
    """Per-block relative change ||W_T - W_0|| / ||W_0|| (bars) and the fraction of entries that
    changed (line, right axis) over relative depth."""
    blocks = [r for r in rows if isinstance(r["block"], int)]
    depth = np.array([r["depth"] for r in blocks])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(
        depth,
        [r["relative_change"] for r in blocks],
        width=0.8 / max(num_blocks - 1, 1),
        color="tab:blue",
        label="||W_T - W_0|| / ||W_0||",
    )
    ax.set_xlabel(f"relative depth (block / {num_blocks - 1})")
    ax.set_ylabel("relative change")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(
        depth,
        [r["fraction_changed"] for r in blocks],
        color="tab:orange",
        marker=".",
        label="fraction of entries changed",
    )
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("fraction changed")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(
        handles,
        cast("list[str]", [h.get_label() for h in handles]),  # the labels of labelled artists
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=2,
    )
    ax.set_title(title or "weight change per block (fp32)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_telemetry(rows: Sequence[dict], num_blocks: int, path: Path, title: str = "") -> Path:
    """Three panels over iterations (gradient norm, update/weight ratio, relative change from the
    start; log scale), one line per trained block, coloured by relative depth (colour bar)."""
    metrics = (
        ("grad_norm", "gradient norm (before clipping)"),
        ("update_ratio", "||update|| / ||W|| per iteration"),
        ("relative_change", "||W_t - W_0|| / ||W_0||"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    cmap = plt.get_cmap("viridis")
    keys = list(dict.fromkeys(r["block"] for r in rows))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for key in keys:
            points = [
                (r["iteration"], r[metric]) for r in rows if r["block"] == key and np.isfinite(r[metric])
            ]
            if not points:
                continue
            depth = key / max(num_blocks - 1, 1) if isinstance(key, int) else 1.0
            x, y = zip(*points, strict=True)
            ax.plot(x, y, marker="." if len(x) < 30 else None, color=cmap(depth), label=str(key))
        if any(r[metric] > 0 for r in rows if np.isfinite(r[metric])):
            ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if len(keys) <= 8:
        axes[0].legend(title="block", fontsize=7, title_fontsize=7)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, num_blocks - 1))
    fig.colorbar(mappable, ax=axes, label="block (depth)", fraction=0.02)
    fig.suptitle(title or "per-block telemetry", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
