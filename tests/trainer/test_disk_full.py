"""A disk that fills up during a checkpoint write or a metrics.jsonl append: the run stops with one
line naming the folder and the space a checkpoint takes, the last good checkpoint stays intact, and
``trainer.resume=true`` continues bit for bit once space is free.

On a real small file system (a 16 MB tmpfs; needs root) the disk is filled for real, as the writes
meet it: torch.save then reports "RuntimeError: unexpected pos", safetensors its own error, the
metrics append ENOSPC. Elsewhere the same faults are injected as ``OSError(ENOSPC)``.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_exact import EXACT

from lamina.cli import compose_config, main
from lamina.trainer import checkpoint
from lamina.trainer import train as train_module
from lamina.trainer.checkpoint import checkpoint_problem, folder_bytes, latest_checkpoint
from lamina.trainer.train import train

# test_exact's settings (the weights really move; every generator is in play), a checkpoint each
# iteration, nothing else written to the folder.
RUN = [
    *EXACT,
    "trainer.save_every=1",
    "logging.tensorboard=false",
    "logging.curves=false",
]
LONGEST = 8
VOLATILE = {"rollout_s", "update_s", "rss_mb", "max_rss_mb", "peak_memory_mb"}
NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def _tensors(run, done):
    return load_file(str(run / "checkpoints" / f"iter_{done:06d}" / "trainable.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of ``LONGEST`` iterations (constant lr: its first k iterations are a
    k-iteration run's)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(compose_config([*RUN, f"trainer.iterations={LONGEST}", f"trainer.output_dir={run}"]))
    initial = load_file(str(run / "checkpoints" / "iter_000001" / "reference.safetensors"))
    assert any(not torch.equal(_tensors(run, LONGEST)[k], initial[k]) for k in initial)  # it trains
    return run


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs mounted for the test, or a skip where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux; test_full_disk_injected covers the rest")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave: int) -> None:
    """Writes ``disk/filler`` until at most ``leave`` bytes are free."""
    with open(disk / "filler", "ab", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 16, 1 << 12):
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - chunk >= leave:
                try:
                    fh.write(b"\0" * chunk)
                except OSError:
                    break


def _free(disk, monkeypatch) -> None:
    """Frees the space and stops filling the disk."""
    (disk / "filler").unlink()
    monkeypatch.undo()


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stop_and_resume(run, reference, iterations, capsys, undo):
    """Runs ``lamina train`` into ``run`` until the disk fills, checks what is left, frees the
    space (``undo``), resumes and compares with the reference; returns (stop line, iterations done)."""
    args = [*RUN, f"trainer.iterations={iterations}", f"trainer.output_dir={run}"]
    capsys.readouterr()
    assert main(["train", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lamina: stopped: no space left on device"), err
    assert f" in {run} (a checkpoint of this run takes about 1.2 MB" in err  # 1.24 MB on disk
    assert "trainer.resume=true" in err
    good = latest_checkpoint(run)
    assert good is not None and checkpoint_problem(good) is None
    assert f"the last good checkpoint is {good};" in err
    done = int(good.name.removeprefix("iter_"))
    assert list((run / "checkpoints").glob(".*partial*")) == []  # the failed staging folder is gone
    assert _same(_tensors(run, done), _tensors(reference, done))
    rows = _metrics(run)  # whole lines only: each parses
    assert rows == _metrics(reference)[: len(rows)]
    undo()
    assert main(["train", *args, "trainer.resume=true"]) == 0
    assert _same(_tensors(run, iterations), _tensors(reference, iterations))
    assert _metrics(run) == _metrics(reference)[:iterations]
    return err, done


@pytest.mark.parametrize("leave", [0.5, 0.05], ids=["inside-optimizer-pt", "inside-safetensors"])
def test_full_disk_during_a_checkpoint_write(small_disk, reference, leave, monkeypatch, capsys):
    """The third checkpoint meets a full disk: with half a checkpoint's room left torch.save of
    optimizer.pt fails, with 5% the first safetensors file does."""
    run, size = small_disk / "run", folder_bytes(reference / "checkpoints" / "iter_000001")
    real_save = train_module.save

    def save(cfg, learner, out, iteration):
        if iteration == 2:
            fill(small_disk, int(size * leave))
        return real_save(cfg, learner, out, iteration)

    monkeypatch.setattr(train_module, "save", save)
    err, done = _stop_and_resume(run, reference, 4, capsys, lambda: _free(small_disk, monkeypatch))
    assert done == 2 and f"writing checkpoint {run}/checkpoints/iter_000003" in err


def test_full_disk_during_a_metrics_append(small_disk, reference, monkeypatch, capsys):
    """The disk is full when a metrics row needs a new page of the file (tmpfs counts pages: a row
    that fits in the last page's slack still succeeds), from the third iteration on."""
    run, page = small_disk / "run", os.sysconf("SC_PAGE_SIZE")
    real_append = train_module.append_row
    filled = []

    def append(fh, row, out):
        if row["iteration"] >= 2 and not filled and len(json.dumps(row)) + 1 > -fh.tell() % page:
            fill(small_disk, 0)
            filled.append(row["iteration"])
        return real_append(fh, row, out)

    monkeypatch.setattr(train_module, "append_row", append)
    err, done = _stop_and_resume(run, reference, LONGEST, capsys, lambda: _free(small_disk, monkeypatch))
    assert filled == [done] and f"appending to metrics.jsonl after iteration {done + 1}" in err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == LONGEST


class _FullFile:
    """A metrics file whose write number ``fail_at`` writes half its bytes, then raises ENOSPC."""

    def __init__(self, fh, fail_at: int):
        self.fh, self.fail_at, self.writes = fh, fail_at, 0

    def write(self, data):
        self.writes += 1
        if self.writes == self.fail_at:
            self.fh.write(bytes(data[: len(data) // 2]))
            raise NO_SPACE
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.fh.__exit__(*exc)


@pytest.mark.parametrize("where", ["checkpoint", "quota", "metrics"])
def test_full_disk_injected(tmp_path, reference, where, monkeypatch, capsys):
    """The same faults on any machine: ENOSPC after part of a checkpoint's files; safetensors' own
    error for an exhausted quota (the disk itself has room, so only the error's text tells); or
    ENOSPC after half a metrics line (which must be cut off again, or the resume could not parse
    the file)."""
    run = tmp_path / "run"
    if where == "quota":
        real_save_file = checkpoint.save_file

        def save_file(tensors, path, *args, **kwargs):
            if ".iter_000003.partial" in str(path):
                raise SafetensorError(
                    "Error while serializing: I/O error: Disk quota exceeded (os error 122)"
                )
            return real_save_file(tensors, path, *args, **kwargs)

        monkeypatch.setattr(checkpoint, "save_file", save_file)
    elif where == "checkpoint":
        real_torch_save = torch.save

        def torch_save(obj, path, *args, **kwargs):
            if ".iter_000003.partial" in str(path):
                pathlib.Path(path).write_bytes(b"\0" * 1000)
                raise NO_SPACE
            return real_torch_save(obj, path, *args, **kwargs)

        monkeypatch.setattr(checkpoint.torch, "save", torch_save)
    else:
        real_open = pathlib.Path.open

        def path_open(self, *args, **kwargs):
            fh = real_open(self, *args, **kwargs)
            return _FullFile(fh, fail_at=3) if self.name == "metrics.jsonl" else fh

        monkeypatch.setattr(pathlib.Path, "open", path_open)
    err, done = _stop_and_resume(run, reference, 4, capsys, monkeypatch.undo)
    assert done == 2
    assert ("after iteration 3" if where == "metrics" else "writing checkpoint") in err
