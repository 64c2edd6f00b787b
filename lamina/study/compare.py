"""``lamina compare A B``: do the same blocks matter in two sweeps?

Spearman's rho and Kendall's tau-b (``scipy.stats``, with their p-values) between the two sweeps'
per-block values on the blocks both sweeps trained; sweeps of models with different depth are
matched by relative depth. The value ranked is C(k) when both sweeps define it; C is an
increasing affine function of S(k) within a sweep, so ranking S(k) gives the same correlation
and is used when either sweep's S_full ~ S_base (said so in the output). The bootstrap interval
resamples each sweep's seeds and held-out episodes (independently for the two sweeps): it shows
how much evaluation noise moves the correlation, not how it would change with other blocks.

    lamina compare runs/study/demo runs/study/demo-gigpo [out=DIR]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from omegaconf import OmegaConf
from scipy.stats import kendalltau, spearmanr

from lamina.study.contribution import (
    ContributionTable,
    arm_replicates,
    contribution_table,
    depth_fraction,
    load_scores,
)
from lamina.study.stats import kendall_tau_b_rows, percentile_interval, spearman_rows


@dataclass
class Sweep:
    """A finished sweep read back from its folder."""

    path: Path
    name: str
    num_blocks: int
    table: ContributionTable
    replicates: dict[int, np.ndarray]  # block -> (B,) bootstrap replicates of S(k)


def load_sweep(path: Path, metric: str | None = None, replicates: int | None = None) -> Sweep:
    """Reads a sweep folder: its settings, contribution table and per-block replicates.

    Raises:
        ValueError: not a sweep folder, or no finished base/full arms.
    """
    path = Path(path)
    settings_path = path / "sweep.yaml"
    if not settings_path.exists():
        raise ValueError(f"{path} is not a sweep folder (no sweep.yaml); run `lamina sweep` first")
    # sweep.yaml is a mapping, so its container is a dict.
    settings = cast("dict[str, Any]", OmegaConf.to_container(OmegaConf.load(settings_path), resolve=True))
    study = settings.get("study", {})
    metric = metric or study.get("metric", "success")
    replicates = replicates or int(study.get("bootstrap", 2000))
    seed = int(study.get("bootstrap_seed", 0))
    summary_path = path / "summary.json"
    if summary_path.exists():
        num_blocks = int(json.loads(summary_path.read_text())["num_blocks"])
    else:
        from lamina.agents.models import ModelConfig, model_num_blocks

        num_blocks = model_num_blocks(ModelConfig(**settings["model"]))
    scores = load_scores(path, metric)
    table = contribution_table(scores, num_blocks, replicates, float(study.get("confidence", 0.95)), seed)
    ref_seeds = sorted(set(scores.arms["base"]) & set(scores.arms["full"]))
    per_block: dict[int, np.ndarray] = {}
    for row in table.block_rows:
        assert isinstance(row.block, int)  # block_rows are the rows of blocks
        seeds = sorted(set(scores.arms[row.block]) & set(ref_seeds))
        per_block[row.block] = arm_replicates(scores.arms[row.block], seeds, replicates, seed)[1]
    return Sweep(path, path.name, num_blocks, table, per_block)


def match_blocks(a: Sweep, b: Sweep) -> list[tuple[int, int]]:
    """Pairs of (block in A, block in B) compared: the same index when both models have the same
    depth, else the nearest relative depth within half a block of the shallower model (each block
    used once, closest pairs first)."""
    blocks_a, blocks_b = sorted(a.replicates), sorted(b.replicates)
    if a.num_blocks == b.num_blocks:
        return [(k, k) for k in blocks_a if k in b.replicates]
    tolerance = 0.5 / (min(a.num_blocks, b.num_blocks) - 1)
    candidates = sorted(
        (abs(depth_fraction(i, a.num_blocks) - depth_fraction(j, b.num_blocks)), i, j)
        for i in blocks_a
        for j in blocks_b
    )
    used_a, used_b, pairs = set(), set(), []
    for distance, i, j in candidates:
        if distance <= tolerance + 1e-12 and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def compare_sweeps(path_a: Path, path_b: Path, out: Path | None = None) -> dict:
    """Rank correlation of two sweeps; writes ``compare.json``, ``compare.md`` and ``compare.png``.

    Returns:
        the ``compare.json`` content.
    Raises:
        ValueError: fewer than 3 blocks in common, or a folder that is not a finished sweep.
    """
    from lamina.study.plots import plot_comparison

    a, b = load_sweep(path_a), load_sweep(path_b)
    pairs = match_blocks(a, b)
    if len(pairs) < 3:
        raise ValueError(
            f"{a.path} and {b.path} share {len(pairs)} block(s) (by relative depth when the depths differ: "
            f"L={a.num_blocks} and L={b.num_blocks}); a rank correlation needs at least 3"
        )
    use_c = not (a.table.degenerate or b.table.degenerate)
    quantity = "C(k)" if use_c else "S(k)"
    field = "contribution" if use_c else "score"

    def values(sweep: Sweep, blocks: list[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = [sweep.table.row(k) for k in blocks]
        point = np.array([getattr(r, field) for r in rows])
        lo = np.array([getattr(r, f"{field}_lo") for r in rows])
        hi = np.array([getattr(r, f"{field}_hi") for r in rows])
        err = np.clip(
            np.stack([np.where(np.isfinite(lo), point - lo, 0), np.where(np.isfinite(hi), hi - point, 0)]),
            0,
            None,
        )
        return point, err

    blocks_a, blocks_b = [i for i, _ in pairs], [j for _, j in pairs]
    va, err_a = values(a, blocks_a)
    vb, err_b = values(b, blocks_b)
    rho, rho_p = spearmanr(va, vb)
    tau, tau_p = kendalltau(va, vb)
    ra = np.stack([a.replicates[k] for k in blocks_a], axis=1)  # (B, n)
    rb = np.stack([b.replicates[k] for k in blocks_b], axis=1)
    n = min(len(ra), len(rb))
    rho_b, tau_b = spearman_rows(ra[:n], rb[:n]), kendall_tau_b_rows(ra[:n], rb[:n])
    level = a.table.confidence
    result: dict[str, Any] = {
        "a": str(a.path),
        "b": str(b.path),
        "quantity": quantity,
        "pairs": [
            {"block_a": i, "block_b": j, "value_a": float(x), "value_b": float(y)}
            for (i, j), x, y in zip(pairs, va, vb, strict=True)
        ],
        "spearman": {
            "rho": _num(rho),
            "p_value": _num(rho_p),
            "interval": list(percentile_interval(rho_b, level)),
            "undefined_replicates": int(np.isnan(rho_b).sum()),
        },
        "kendall": {
            "tau_b": _num(tau),
            "p_value": _num(tau_p),
            "interval": list(percentile_interval(tau_b, level)),
            "undefined_replicates": int(np.isnan(tau_b).sum()),
        },
        "confidence": level,
        "replicates": n,
        "degenerate": {"a": a.table.degenerate, "b": b.table.degenerate},
    }
    out = Path(out) if out is not None else Path("runs/compare") / f"{a.name}-vs-{b.name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    (out / "compare.md").write_text(compare_markdown(result, a, b))
    labels = [str(i) if i == j else f"{i}/{j}" for i, j in pairs]
    caption = (
        f"{quantity} on {len(pairs)} blocks: Spearman {_show(result['spearman']['rho'])} "
        f"{_span(result['spearman']['interval'])} (p = {_show(result['spearman']['p_value'])}), "
        f"Kendall {_show(result['kendall']['tau_b'])} (p = {_show(result['kendall']['p_value'])})"
    )
    plot_comparison(va, vb, err_a, err_b, labels, (a.name, b.name), quantity, caption, out / "compare.png")
    result["out"] = str(out)
    return result


def _num(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _show(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _span(interval: list[float]) -> str:
    return f"[{_show(interval[0])}, {_show(interval[1])}]"


def compare_markdown(result: dict, a: Sweep, b: Sweep) -> str:
    """``compare.md``: the correlations and the matched blocks."""
    level = f"{result['confidence']:.0%}"
    s, k, quantity = result["spearman"], result["kendall"], result["quantity"]
    lines = [
        f"# {a.name} vs {b.name}",
        "",
        f"Ranked quantity: {result['quantity']} on {len(result['pairs'])} shared blocks "
        f"(L = {a.num_blocks} and {b.num_blocks}).",
    ]
    if result["quantity"] == "S(k)":
        bad = [sw.name for sw in (a, b) if sw.table.degenerate]
        lines.append(
            f"C(k) is not defined in {', '.join(bad)} (S_full - S_base not clearly above zero); "
            "S(k) ranks the blocks as C(k) would."
        )
    if s["rho"] is None:
        lines.append(
            "The rank correlation is not defined: in one sweep every shared block has the same value."
        )
    lines += [
        "",
        "| statistic | value | p-value | " + level + " bootstrap interval |",
        "|---|---|---|---|",
        f"| Spearman rho | {_show(s['rho'])} | {_show(s['p_value'])} | {_span(s['interval'])} |",
        f"| Kendall tau-b | {_show(k['tau_b'])} | {_show(k['p_value'])} | {_span(k['interval'])} |",
        "",
        "The interval resamples each sweep's seeds and held-out episodes; it reflects evaluation noise, "
        "not the choice of blocks.",
        "",
        f"| block in {a.name} | block in {b.name} | {quantity} in {a.name} | {quantity} in {b.name} |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['block_a']} | {p['block_b']} | {p['value_a']:.3f} | {p['value_b']:.3f} |"
        for p in result["pairs"]
    ]
    return "\n".join(lines) + "\n"


def seed_rank_stability(path: Path, out: Path | None = None) -> dict:
    """Rank stability of one sweep: Spearman's rho between the block rankings of every two seeds.

    Each seed's ranking is of S_k (its held-out score, averaged over the shared episodes) over the
    blocks both seeds finished; C(k) would rank the same way within a seed. Writes
    ``rank_stability.json`` and ``.md`` to ``out`` (default ``runs/compare/<sweep>-seeds``).

    Returns:
        the ``rank_stability.json`` content: ``pairs`` (seed_a, seed_b, blocks, rho, p_value), and
        ``mean_rho`` / ``min_rho`` over the pairs where rho is defined (None where none is).
    Raises:
        ValueError: not a sweep folder, fewer than two seeds, or no two seeds sharing 3 blocks.
    """
    path = Path(path)
    settings_path = path / "sweep.yaml"
    if not settings_path.exists():
        raise ValueError(f"{path} is not a sweep folder (no sweep.yaml); run `lamina sweep` first")
    settings = cast("dict[str, Any]", OmegaConf.to_container(OmegaConf.load(settings_path), resolve=True))
    scores = load_scores(path, settings.get("study", {}).get("metric", "success"))
    blocks = sorted(k for k in scores.arms if isinstance(k, int))
    seeds = sorted({s for k in blocks for s in scores.arms[k]})
    if len(seeds) < 2:
        raise ValueError(f"{path}: rank stability needs blocks finished with 2 or more seeds; found {seeds}")
    pairs: list[dict[str, Any]] = []
    for i, s in enumerate(seeds):
        for t in seeds[i + 1 :]:
            shared = [k for k in blocks if s in scores.arms[k] and t in scores.arms[k]]
            if len(shared) < 3:
                continue
            x = [float(scores.arms[k][s].mean()) for k in shared]
            y = [float(scores.arms[k][t].mean()) for k in shared]
            rho, p_value = spearmanr(x, y)
            pairs.append(
                {"seed_a": s, "seed_b": t, "blocks": shared, "rho": _num(rho), "p_value": _num(p_value)}
            )
    if not pairs:
        raise ValueError(f"{path}: no two seeds share 3 or more finished blocks; a rank correlation needs 3")
    defined = [p["rho"] for p in pairs if p["rho"] is not None]
    result: dict[str, Any] = {
        "sweep": str(path),
        "quantity": "S(k) per seed",
        "pairs": pairs,
        "mean_rho": float(np.mean(defined)) if defined else None,
        "min_rho": float(np.min(defined)) if defined else None,
    }
    out = Path(out) if out is not None else Path("runs/compare") / f"{path.name}-seeds"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rank_stability.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# Rank stability of {path.name} across seeds",
        "",
        "Spearman's rho between two seeds' rankings of the blocks by held-out S(k) "
        f"(mean {_show(result['mean_rho'])}, lowest {_show(result['min_rho'])}; n/a: one seed scored "
        "every shared block the same).",
        "",
        "| seed A | seed B | blocks | Spearman rho | p-value |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['seed_a']} | {p['seed_b']} | {len(p['blocks'])} | {_show(p['rho'])} | {_show(p['p_value'])} |"
        for p in pairs
    ]
    (out / "rank_stability.md").write_text("\n".join(lines) + "\n")
    result["out"] = str(out)
    return result
