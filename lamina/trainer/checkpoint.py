"""Checkpoints of the trained blocks (safetensors) plus the optimizer and loop state, for resume.

A checkpoint folder is written under a temporary name and renamed when complete, so the newest
folder that exists is always a good one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PREFIX = "iter_"


def save_checkpoint(
    output_dir: Path,
    iteration: int,
    model: nn.Module,
    names: list[str],
    optimizer: torch.optim.Optimizer,
    state: dict,
    extras: dict[str, object] | None = None,
) -> Path:
    """Writes ``checkpoints/iter_<k>/`` with ``trainable.safetensors``, ``optimizer.pt``, ``state.json``
    and one ``torch.save`` file per ``extras`` entry (file name -> object)."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"{PREFIX}{iteration:06d}"
    staging = root / f".{PREFIX}{iteration:06d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    params = dict(model.named_parameters())
    save_file(
        {n: params[n].detach().contiguous().cpu() for n in names}, str(staging / "trainable.safetensors")
    )
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    for filename, obj in (extras or {}).items():
        torch.save(obj, staging / filename)
    (staging / "state.json").write_text(
        json.dumps({"iteration": iteration, "trainable": names, **state}, indent=1)
    )
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = Path(output_dir) / "checkpoints"
    found = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "state.json").exists()) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Loads trained tensors (and optimizer state) into ``model``; returns ``state.json``."""
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = [n for n in tensors if n not in params]
    if unknown:
        raise ValueError(f"checkpoint {path} has tensors the model lacks, e.g. {unknown[0]!r}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    if optimizer is not None and (path / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    return state
