"""Checkpoints of the trained blocks plus everything an exact resume needs.

A checkpoint folder ``checkpoints/iter_NNNNNN/`` holds:
- ``trainable.safetensors``: the trained tensors (and ``reference.safetensors``, the KL reference's
  initial values, when there is one);
- ``optimizer.pt``: the optimizer state, loaded with ``torch.load(weights_only=True)``;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states and the mini-batch shuffle generator;
- ``state.json``: the iteration, the trainable names, the learning-rate settings, Python's and
  NumPy's generator states, and the loop's counters;
- ``manifest.json``, written last: the SHA-256 of every other file.

It is written under a temporary name, every file fsynced, then renamed; a folder whose manifest is
missing or does not match its files is skipped at resume (with a warning naming it) in favour of
the previous good one. A save that fails (a full disk included) deletes its staging folder; a full
disk (or quota) stops the run with ``DiskFull``: one line naming the folder, the space a checkpoint
takes, the free space and the last good checkpoint, which stays intact.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lamina.errors import DiskFull
from lamina.trainer.lora import ADAPTER, LORA_ALPHA, is_lora_name, merge_lora_tensors

log = logging.getLogger(__name__)

PREFIX = "iter_"
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def capture_rng(shuffle: torch.Generator | None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random generator the loop draws from: (tensors for safetensors, JSON-able states)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    if shuffle is not None:
        tensors["shuffle"] = shuffle.get_state()
    version, mt_state, gauss = random.getstate()
    # The global RandomState is MT19937, whose legacy state is this tuple (numpy's stubs also allow a dict).
    mt19937 = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    name, keys, pos, has_gauss, cached = mt19937
    states = {
        "python": [version, list(mt_state), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, states


def restore_rng(tensors: dict[str, torch.Tensor], states: dict, shuffle: torch.Generator | None) -> None:
    """Puts back what ``capture_rng`` saved."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if shuffle is not None and "shuffle" in tensors:
        shuffle.set_state(tensors["shuffle"])
    version, mt_state, gauss = states["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    output_dir: Path,
    iteration: int,
    model: nn.Module,
    names: list[str],
    optimizer: torch.optim.Optimizer,
    state: dict,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Writes ``checkpoints/iter_<k>/`` crash-safely and returns it; k = ``iteration + 1``.

    A folder counts the iterations done, as the progress lines do ("iter 4/4", "eval @4" ->
    ``iter_000004``) and as verl's ``global_step_<k>`` and TRL's ``checkpoint-<k>`` do; ``state.json``
    keeps ``iteration``, the 0-based index of the last iteration done, as ``metrics.jsonl`` does.

    Args:
        iteration: the 0-based index of the iteration just done.
        state: JSON-able loop state merged into ``state.json``.
        tensors: extra safetensors files, file stem -> {name: tensor} (``reference``, ``rng``).
    """
    root = Path(output_dir) / "checkpoints"
    final = root / f"{PREFIX}{iteration + 1:06d}"
    staging = root / f".{PREFIX}{iteration + 1:06d}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    params = dict(model.named_parameters())
    files = {"trainable.safetensors": {n: params[n].detach().contiguous().cpu() for n in names}}
    adapter_a = next((params[n] for n in names if f".lora_A.{ADAPTER}." in n), None)
    if adapter_a is not None and "lora" not in state:  # e.g. lamina sft with layers=lora:R@...
        state = {**state, "lora": {"rank": int(adapter_a.shape[0]), "alpha": LORA_ALPHA}}
    for stem, group in (tensors or {}).items():
        files[f"{stem}.safetensors"] = {k: v.detach().contiguous().cpu() for k, v in group.items()}
    try:
        staging.mkdir(parents=True)
        for filename, group in files.items():
            save_file(group, str(staging / filename))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "state.json").write_text(
            json.dumps({"iteration": iteration, "trainable": names, **state}, indent=1)
        )
        # Fault injection for tests: keeps the write open so a test can kill the process inside it.
        time.sleep(float(os.environ.get("LAMINA_TEST_SLOW_SAVE_S", "0")))
        manifest = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
        for path in staging.iterdir():
            _fsync(path)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync(staging / MANIFEST)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException as err:
        # What a checkpoint takes: the tensors and the optimizer state, or the previous one's size.
        needed = sum(_tensor_bytes(group.values()) for group in files.values())
        needed += _tensor_bytes(v for s in optimizer.state.values() for v in s.values())
        previous = checkpoint_folders(output_dir)
        needed = max(needed, folder_bytes(previous[-1]) if previous else 0)
        free = _free_bytes(root)  # before the staging folder's files go
        shutil.rmtree(staging, ignore_errors=True)  # a half-written checkpoint must not fill the disk
        # torch.save reports a full disk as "RuntimeError: unexpected pos", safetensors as its own
        # error: a failed write that left less room than a checkpoint needs is taken as a full disk.
        if isinstance(err, Exception) and (is_disk_full(err) or (free is not None and free < needed)):
            raise disk_full(f"writing checkpoint {final}", Path(output_dir), needed) from err
        raise
    _fsync(root)
    return final


DISK_FULL_TEXTS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def is_disk_full(err: BaseException) -> bool:
    """The write failed for want of space (a full disk or an exhausted quota): an ``OSError`` with
    that errno, or a library's error whose text says so (safetensors: "os error 28")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(err).lower() for text in DISK_FULL_TEXTS)


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _tensor_bytes(values) -> int:
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def folder_bytes(path: Path) -> int:
    """The size of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _mb(size: float) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.1f} MB"


def disk_full(doing: str, output_dir: Path, needed: int | None = None) -> DiskFull:
    """The one-line stop for a write that found the disk full: what failed, the space a checkpoint
    needs (``needed``, default the newest good checkpoint's size) and what is free, the last good
    checkpoint, and how to continue."""
    last = latest_checkpoint(output_dir)
    if needed is None:
        needed = folder_bytes(last) if last is not None else 0
    space = [f"a checkpoint of this run takes about {_mb(needed)}"] if needed else []
    free = _free_bytes(output_dir)
    if free is not None:
        space.append(f"{_mb(free)} free")
    return DiskFull(
        f"no space left on device {doing} in {output_dir} ({', '.join(space) or 'size unknown'}); "
        f"the last good checkpoint is {last or 'none'}; free space there, then continue with "
        "trainer.resume=true"
    )


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be trusted (missing manifest, file or checksum), or None."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        return "no manifest (written by an interrupted save or an older lamina)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return "unreadable manifest"
    for name, digest in manifest.items():
        file = path / name
        if not file.exists():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint folder whose files match their manifest, or None; damaged newer ones
    are skipped with a warning that names them."""
    root = Path(output_dir) / "checkpoints"
    found = sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir()) if root.is_dir() else []
    for path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping damaged checkpoint %s: %s", path, problem)
    return None


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    """Deletes all but the ``keep`` newest good checkpoints (damaged ones and leftover staging
    folders older than the newest good one go too); returns what was deleted. The newest good
    checkpoint is never deleted, so a crash during pruning leaves a resumable run."""
    if keep < 1:
        return []
    folders = checkpoint_folders(output_dir)
    good = [p for p in folders if checkpoint_problem(p) is None]
    if not good:
        return []
    kept = set(good[-keep:])
    newest = good[-1]
    doomed = [p for p in folders if p not in kept and p.name < newest.name]
    root = Path(output_dir) / "checkpoints"
    doomed += [p for p in root.glob(f".{PREFIX}*.partial") if p.name[1:] < newest.name]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """All finished checkpoint folders, oldest first."""
    root = Path(output_dir) / "checkpoints"
    return sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir()) if root.is_dir() else []


def load_trained_tensors(path: Path, model: nn.Module) -> dict:
    """Copies a checkpoint's trained tensors into ``model`` (any device or dtype); returns ``state.json``.

    A LoRA run's adapters (``layers=lora:R@...``) go into a model that has them (a resumed run); a
    plain model gets them merged into its weights (W += alpha/R B A), so ``lamina eval``, ``lamina
    export`` and ``init_from`` read a LoRA run as the model it computes."""
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    lora = state.get("lora")
    if lora is not None and not any(is_lora_name(n) for n in params):
        adapters = {n: t for n, t in tensors.items() if is_lora_name(n)}
        merge_lora_tensors(model, adapters, float(lora["alpha"]) / int(lora["rank"]))
        tensors = {n: t for n, t in tensors.items() if n not in adapters}
    unknown = [n for n in tensors if n not in params]
    if unknown:
        raise ValueError(f"checkpoint {path} has tensors the model lacks, e.g. {unknown[0]!r}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Loads trained tensors (and optimizer state) into ``model``; returns ``state.json``."""
    state = load_trained_tensors(path, model)
    if optimizer is not None and (path / "optimizer.pt").exists():
        device = next(model.parameters()).device
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    return state


def load_tensors(path: Path, stem: str) -> dict[str, torch.Tensor] | None:
    """A checkpoint's ``<stem>.safetensors``, or None when it has none."""
    file = path / f"{stem}.safetensors"
    return load_file(str(file)) if file.exists() else None
