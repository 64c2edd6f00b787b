"""How much each block moved in a run: ||W_T - W_0|| / ||W_0|| and the fraction of entries changed.

W_0 is the run's starting point (the base model plus its ``init_from`` chain), W_T the same with
the run's checkpoint loaded. Both are compared in fp32 after W_0 is rounded to the dtype the
checkpoint was saved in, so a bf16 run does not count rounding as change. Blocks the run did not
train show 0. A LoRA run's W_T is W_0 with its adapters merged (W + alpha/R B A).

    lamina weights runs/sweep/full-seed0          writes weight_change.{csv,md,png} there

When the run logged per-block telemetry (``lamina.trainer.telemetry``, on by default) it also
writes ``telemetry.csv`` (iteration, block, depth, grad_norm, update_ratio, relative_change) and
``telemetry.png``: the three over iterations, one line per block coloured by depth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from lamina.agents.models import load_model
from lamina.study.contribution import depth_fraction
from lamina.trainer.checkpoint import load_checkpoint
from lamina.trainer.layers import block_of, find_blocks
from lamina.trainer.lora import is_lora_name, lora_deltas
from lamina.trainer.restore import init_chain, model_config_of, resolve_checkpoint, run_config

COLUMNS = ("block", "depth", "relative_change", "fraction_changed", "parameters", "trained_tensors")


def weight_change(path: str | Path) -> tuple[list[dict], int, Path]:
    """Per-block change of a run (rows for embeddings / LM head when they were trained).

    Args:
        path: a run folder or a checkpoint folder.
    Returns:
        ``(rows, L, checkpoint folder)``; a row holds the ``COLUMNS``.
    """
    ckpt, run_dir = resolve_checkpoint(path, argument="RUN_OR_CHECKPOINT")
    model_cfg = model_config_of(run_config(run_dir))
    model_cfg.dtype = "float32"
    model, _ = load_model(model_cfg)
    for earlier in init_chain(run_dir):
        load_checkpoint(earlier, model)
    trained = load_file(str(ckpt / "trainable.safetensors"))
    lora = json.loads((ckpt / "state.json").read_text()).get("lora")
    if lora is not None:  # a LoRA run moved the weights its adapters merge into: W_T = W_0 + alpha/R B A
        deltas = lora_deltas(trained, float(lora["alpha"]) / int(lora["rank"]))
        weights = dict(model.named_parameters())
        trained = {n: t for n, t in trained.items() if not is_lora_name(n)}
        trained |= {n: weights[n].detach().float() + d for n, d in deltas.items()}
    prefix, block_list = find_blocks(model)
    num_blocks = len(block_list)
    groups: dict[int | str, dict[str, float]] = {
        k: {"diff": 0.0, "norm": 0.0, "changed": 0, "numel": 0, "trained": 0} for k in range(num_blocks)
    }
    with torch.no_grad():
        for name, param in model.named_parameters():
            block = block_of(name, prefix)
            key: int | str
            if block is None:
                if name not in trained:
                    continue  # embeddings and head that did not train: nothing to report
                key = "embeddings" if "embed" in name else "lm_head" if "head" in name else name
                groups.setdefault(key, {"diff": 0.0, "norm": 0.0, "changed": 0, "numel": 0, "trained": 0})
            else:
                key = block
            start = param.detach().float()
            g = groups[key]
            g["norm"] += float(start.pow(2).sum())
            g["numel"] += start.numel()
            if name in trained:
                end = trained[name]
                start = start.to(end.dtype).float()  # W_0 as the run held it
                delta = end.float() - start
                g["diff"] += float(delta.pow(2).sum())
                g["changed"] += int((delta != 0).sum())
                g["trained"] += 1
    rows = []
    for key, g in groups.items():
        rows.append(
            {
                "block": key,
                "depth": depth_fraction(key, num_blocks) if isinstance(key, int) else float("nan"),
                "relative_change": math.sqrt(g["diff"]) / math.sqrt(g["norm"]) if g["norm"] > 0 else 0.0,
                "fraction_changed": g["changed"] / g["numel"] if g["numel"] else 0.0,
                "parameters": g["numel"],
                "trained_tensors": g["trained"],
            }
        )
    return rows, num_blocks, ckpt


def write_weight_change(path: str | Path, out: str | Path | None = None) -> Path:
    """Writes ``weight_change.csv``, ``.md`` and ``.png`` for a run (into ``out``, default the run
    folder) and returns the folder."""
    from lamina.study.plots import plot_weight_change

    rows, num_blocks, ckpt = weight_change(path)
    out = Path(out) if out is not None else ckpt.parent.parent
    out.mkdir(parents=True, exist_ok=True)

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if not math.isfinite(value) else f"{value:.6g}"
        return str(value)

    (out / "weight_change.csv").write_text(
        "\n".join([",".join(COLUMNS)] + [",".join(cell(r[c]) for c in COLUMNS) for r in rows]) + "\n"
    )
    md = [
        f"# Weight change of {ckpt}",
        "",
        "fp32; relative change = ||W_T - W_0|| / ||W_0|| over all of a block's tensors.",
        "",
        "| block | depth | relative change | fraction changed | parameters | trained tensors |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['block']} | {cell(r['depth'])} | {r['relative_change']:.3g} | {r['fraction_changed']:.3f} | "
        f"{r['parameters']} | {r['trained_tensors']} |"
        for r in rows
    ]
    (out / "weight_change.md").write_text("\n".join(md) + "\n")
    plot_weight_change(
        rows, num_blocks, out / "weight_change.png", f"weight change per block: {ckpt.parent.parent.name}"
    )
    write_telemetry(ckpt.parent.parent, out, num_blocks)
    return out


TELEMETRY_METRICS = ("grad_norm", "update_ratio", "relative_change")


def telemetry_rows(run_dir: str | Path, num_blocks: int) -> list[dict]:
    """The per-block telemetry of a run's ``metrics.jsonl``, one row per (iteration, block)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict] = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        telemetry = record.get("telemetry")
        if not telemetry or record.get("kind", "train") != "train":
            continue
        blocks = dict.fromkeys(k for m in TELEMETRY_METRICS for k in telemetry.get(m, {}))
        for key in blocks:
            block: int | str = int(key) if key.isdigit() else key
            rows.append(
                {
                    "iteration": record["iteration"],
                    "block": block,
                    "depth": depth_fraction(block, num_blocks) if isinstance(block, int) else float("nan"),
                    **{m: telemetry.get(m, {}).get(key, float("nan")) for m in TELEMETRY_METRICS},
                }
            )
    return rows


def write_telemetry(run_dir: Path, out: Path, num_blocks: int) -> bool:
    """Writes ``telemetry.csv`` and ``telemetry.png`` into ``out`` when the run has telemetry."""
    from lamina.study.plots import plot_telemetry

    rows = telemetry_rows(run_dir, num_blocks)
    if not rows:
        return False
    columns = ("iteration", "block", "depth", *TELEMETRY_METRICS)

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if not math.isfinite(value) else f"{value:.6g}"
        return str(value)

    (out / "telemetry.csv").write_text(
        "\n".join([",".join(columns)] + [",".join(cell(r[c]) for c in columns) for r in rows]) + "\n"
    )
    plot_telemetry(rows, num_blocks, out / "telemetry.png", f"per-block telemetry: {Path(run_dir).name}")
    return True
