"""``lamina export checkpoint=DIR out=DIR``: a trained run as a plain Hugging Face model folder.

The folder (``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer
files) loads with ``AutoModelForCausalLM.from_pretrained(out)`` / ``AutoTokenizer.from_pretrained(out)``
and generates the same tokens as lamina's model; tied embeddings stay tied. Its generation config
stops at every end-of-turn token lamina stops at. ``lamina_export.json`` records the source.
A LoRA run (``layers=lora:R@...``) is exported merged (W + alpha/R B A): a plain model of the base
architecture, no PEFT needed to load it.

    lamina export checkpoint=runs/default out=exported/default
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from lamina.agents.models import stop_token_ids
from lamina.errors import UsageError
from lamina.trainer.restore import load_trained_model

EXPORT_KEYS = ("checkpoint", "out")


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Writes the full model of ``checkpoint`` (a run or checkpoint folder) to ``out``.

    Raises:
        ValueError: the checkpoint cannot be resolved, or ``out`` exists and is not empty.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out={str(out)!r} exists and is not an empty folder; choose a new one")
    model, tokenizer, ckpt = load_trained_model(checkpoint)
    state = json.loads((ckpt / "state.json").read_text())
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted export
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "lamina_export.json").write_text(
        json.dumps(
            {
                "checkpoint": str(ckpt.resolve()),
                "iteration": state.get("iteration"),
                "trained_tensors": state.get("trainable", []),
                # A LoRA run's adapters are merged into the weights: the folder has no adapter files.
                "merged_lora": state.get("lora"),
            },
            indent=1,
        )
    )
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out


def parse_export_args(overrides: Sequence[str]) -> dict[str, str]:
    """``checkpoint=DIR out=DIR`` -> dict; raises ValueError naming a bad or missing key."""
    args: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in EXPORT_KEYS:
            raise ValueError(f"unknown argument {item!r}; usage: lamina export checkpoint=DIR out=DIR")
        args[key] = value
    missing = [k for k in EXPORT_KEYS if not args.get(k)]
    if missing:
        raise ValueError(f"missing {missing[0]}=...; usage: lamina export checkpoint=DIR out=DIR")
    return args


def cmd_export(overrides: Sequence[str]) -> int:
    try:
        args = parse_export_args(overrides)
        out = export_checkpoint(args["checkpoint"], args["out"])
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"exported: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
