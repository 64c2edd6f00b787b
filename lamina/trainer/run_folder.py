"""One run per folder, one writer at a time.

    with claim_run_folder(Path(cfg.trainer.output_dir), cfg.trainer.resume, cfg.trainer.overwrite):
        ...  # train: nobody else writes the folder until the block ends

* **One writer.** The writer holds an exclusive ``fcntl.flock`` on ``<folder>/.lamina.lock`` for its
  whole life (``lamina.cache.file_lock``) and writes its process id, host and start time into it.
  A second writer is refused at once, in one line naming the holder. The kernel drops the lock of a
  process that dies, so a lock file that still names a holder but is not locked is stale: the next
  writer takes it over with a warning. Readers (``lamina eval``, ``lamina weights``, ``lamina
  export``) never take the lock.
* **One run.** A folder that already holds files is refused unless the run continues it
  (``trainer.resume=true``) or replaces it (``trainer.overwrite=true``: lamina's outputs of the old
  run are deleted first, so nothing of it mixes into the new one; files lamina does not write are
  kept and named in a warning).

A sweep folder takes the same lock (``folder_lock``); what "already holds a sweep" means there is
decided by ``lamina.study.sweep``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lamina.cache import file_lock
from lamina.errors import ConfigError, DiskFull, FolderInUse

log = logging.getLogger(__name__)

LOCK_NAME = ".lamina.lock"
# What a run writes into its folder (top-level names, glob patterns): native and verl training,
# ``lamina sft``, ``lamina eval``'s default ``evals/``, ``lamina weights``, a failed sweep arm.
RUN_OUTPUTS = (
    "checkpoints",
    "config.yaml",
    "verl_config.yaml",
    "metrics.jsonl",
    "eval*.json",
    "evals",
    "curves.png",
    "tensorboard",
    "wandb",
    "sft.json",
    "weight_change.*",
    "error.txt",
    "*.partial",
)


def holder(lock: Path) -> dict | None:
    """What the lock file says about its (last) holder: ``pid``, ``host``, ``since``; None if empty."""
    try:
        text = lock.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def describe(info: dict | None) -> str:
    """``pid 4242 on host gpu-3 since 2025-01-31 14:05:09``, from a lock file's record."""
    if not info:
        return "a process that has not written its name yet"
    since = info.get("since")
    when = "?"
    if isinstance(since, int | float):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {when}"


@contextmanager
def folder_lock(folder: Path, key: str) -> Iterator[None]:
    """Holds ``folder``'s writer lock (``.lamina.lock``, the folder created if missing) while the block
    runs.

    Args:
        folder: the run or sweep folder.
        key: the setting that named it, for messages (``trainer.output_dir``, ``study.output_dir``).
    Raises:
        FolderInUse: another process holds the lock; the message names it (pid, host, since when).
    """
    lock = Path(folder) / LOCK_NAME
    with file_lock(lock, blocking=False) as locked:
        if not locked:
            raise FolderInUse(
                f"{key}={str(folder)!r} is being written by another lamina process "
                f"({describe(holder(lock))}; lock file {lock}); wait for it to finish or stop it, "
                f"or choose another {key}"
            )
        stale = holder(lock)
        if stale is not None:
            log.warning(
                "%s: taking over the lock left by %s, which no longer holds it (killed, or its machine "
                "stopped)",
                folder,
                describe(stale),
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}
        try:
            lock.write_text(json.dumps(me) + "\n")
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"no space left on device in {folder}: free some space there first") from None
            raise
        try:
            yield
        finally:
            with suppress(OSError):
                lock.write_text("")  # released cleanly: the next writer has nothing stale to report


def contents(folder: Path) -> list[Path]:
    """The folder's entries but its lock file, sorted (empty when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != LOCK_NAME)


def remove_outputs(folder: Path, patterns: Iterable[str]) -> list[Path]:
    """Deletes the entries of ``folder`` matching ``patterns`` (lamina's own outputs); returns the
    entries kept (files lamina does not write), after warning about them."""
    patterns = tuple(patterns)
    kept = []
    for path in contents(folder):
        if any(path.match(pattern) for pattern in patterns):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        else:
            kept.append(path)
    if kept:
        log.warning("%s: kept %s (not written by lamina)", folder, ", ".join(p.name for p in kept[:5]))
    return kept


def _sample(entries: list[Path]) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:3]]
    return ", ".join(names) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


@contextmanager
def claim_run_folder(
    out: Path,
    resume: bool,
    overwrite: bool,
    section: str = "trainer",
    can_resume: bool = True,
) -> Iterator[Path]:
    """Makes ``out`` this run's folder for the block's duration: holds its writer lock, refuses a
    folder that holds another run unless the run resumes it or overwrites it, and with
    ``overwrite`` deletes the old run's outputs first.

    Args:
        out: the run folder (created if missing).
        resume: the run continues what the folder holds (``<section>.resume``).
        overwrite: the run replaces what the folder holds (``<section>.overwrite``).
        section: the config section whose keys the messages name (``trainer``, ``sft``).
        can_resume: False where the command has no resume (``lamina sft``): messages offer only
            ``overwrite``.
    Raises:
        ConfigError: both ``resume`` and ``overwrite``, or a folder that already holds files.
        FolderInUse: another process writes the folder.
    """
    out = Path(out)
    key = f"{section}.output_dir"
    if resume and overwrite:
        raise ConfigError(
            f"{section}.resume=true and {section}.overwrite=true: resume continues the run in {out}, "
            "overwrite deletes it; give one of them"
        )
    with folder_lock(out, key):
        entries = [] if resume else contents(out)
        if entries and not overwrite:
            ways = f"continue it with {section}.resume=true, " if can_resume else ""
            raise ConfigError(
                f"{key}={str(out)!r} already holds a run ({_sample(entries)}); {ways}"
                f"replace it with {section}.overwrite=true, or choose another {key}"
            )
        if entries:
            log.warning("%s=true: deleting the previous run's outputs in %s", f"{section}.overwrite", out)
            remove_outputs(out, RUN_OUTPUTS)
        yield out
