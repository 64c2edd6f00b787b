"""How much each block moved in a run: ||W_T - W_0|| / ||W_0|| and the fraction of entries changed.

W_0 is the run's starting point (the base model plus its ``init_from`` chain), W_T the same with
the run's checkpoint loaded. Both are compared in fp32 after W_0 is rounded to the dtype the
checkpoint was saved in, so a bf16 run does not count rounding as change. Blocks the run did not
train show 0.

    lamina weights runs/sweep/full-seed0          writes weight_change.{csv,md,png} there
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from lamina.agents.models import load_model
from lamina.study.contribution import depth_fraction
from lamina.trainer.checkpoint import load_checkpoint
from lamina.trainer.layers import block_of, find_blocks
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
    return out
