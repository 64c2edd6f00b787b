"""Building a shared cache entry once, however many processes ask for it at the same time.

Several lamina processes (a sweep's first arms, two ``lamina train`` started together) may find the
same cache entry missing at once. :func:`build_once` makes exactly one of them build it:

* an exclusive ``fcntl.flock`` on a hidden ``.<name>.lock`` beside the entry serializes the builders,
  so the others wait instead of each spending minutes on the same work, then find it ready;
* the builder writes into its own staging folder ``<name>.partial-<pid>-<random>`` and publishes it
  with one rename, so a reader never sees a half-written entry;
* staging folders left by a killed builder are deleted by the next process that holds the lock:
  the kernel drops a dead process's flock, and only the holder of the lock ever stages.

Only the standard library is imported here, so any lamina module can use it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PARTIAL = ".partial"


def lock_path(target: Path) -> Path:
    """The lock file guarding ``target``: hidden, beside it, so it is on the same file system."""
    return target.with_name(f".{target.name}.lock")


@contextmanager
def file_lock(path: Path, blocking: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Holds an exclusive ``fcntl.flock`` on the file ``path`` (created, with its folder, if
    missing); yields False (without waiting) when ``blocking`` is False and another process holds it.
    ``on_wait`` is called once before a blocking wait. The kernel drops the lock of a process that
    dies, so a lock is never left held by a dead process.

    The lock file stays after release: deleting it would let a waiter lock a file that a newcomer
    can no longer see, and so two processes would both hold "the" lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            locked = False
        if not locked and blocking:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        yield locked
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


@contextmanager
def cache_lock(target: Path, blocking: bool = True) -> Iterator[bool]:
    """Holds the exclusive lock of ``target`` (:func:`file_lock` on :func:`lock_path`); yields False
    (without waiting) when ``blocking`` is False and another process holds it."""

    def waiting() -> None:
        log.info("waiting for another process that is building %s", target)

    with file_lock(lock_path(target), blocking, waiting) as locked:
        yield locked


def staging_path(target: Path) -> Path:
    """A fresh name beside ``target`` that no other process uses: ``<name>.partial-<pid>-<random>``."""
    return target.with_name(f"{target.name}{PARTIAL}-{os.getpid()}-{secrets.token_hex(4)}")


def stale_partials(target: Path) -> list[Path]:
    """Staging folders (and files) of ``target`` left behind, including the old fixed ``<name>.partial``."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f"{target.name}{PARTIAL}*"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(target: Path) -> None:
    """Deletes leftover staging of ``target`` when no process is building it (its lock is free)."""
    if not stale_partials(target):
        return
    with cache_lock(target, blocking=False) as locked:
        if locked:
            for path in stale_partials(target):
                log.info("removing %s, left by an interrupted build", path)
                _remove(path)


def _rename_into_place(staging: Path, target: Path, ready: Callable[[], bool]) -> None:
    """Renames ``staging`` to ``target``. A complete ``target`` that appeared meanwhile (a process
    that does not take the lock) wins and ours is dropped; an incomplete one is replaced."""
    try:
        os.rename(staging, target)
        return
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise
    if ready():
        _remove(staging)
        return
    _remove(target)
    os.rename(staging, target)


def build_once(
    target: Path,
    build: Callable[[Path], None],
    ready: Callable[[], bool] | None = None,
    publish: Callable[[Path], None] | None = None,
    clean_when_ready: bool = True,
) -> Path:
    """Returns ``target``, built by ``build`` unless it is ready, at most once across processes.

    Args:
        target: the cache entry (a file or a folder); its parent folder is created.
        build: fills the staging path it is given (which does not exist yet) with the entry.
        ready: whether the entry is complete; default: ``target`` exists.
        publish: moves the finished staging path into place, called under the lock; default: one
            rename of the staging path to ``target``. The staging path is deleted afterwards.
        clean_when_ready: also delete leftover staging when the entry is already there (a glob of
            its folder); callers on a hot path over a large folder turn it off.
    """
    is_ready = ready or target.exists
    if is_ready():
        if clean_when_ready:
            clean_stale(target)
        return target
    with cache_lock(target):
        # Whoever held the lock before us may have built it while we waited.
        if is_ready():
            return target
        for path in stale_partials(target):
            log.info("removing %s, left by an interrupted build", path)
            _remove(path)
        staging = staging_path(target)
        try:
            build(staging)
            if publish is None:
                _rename_into_place(staging, target, is_ready)
            else:
                publish(staging)
        finally:
            if staging.exists() or staging.is_symlink():
                _remove(staging)
    if not is_ready():
        raise RuntimeError(f"building the cache entry {target} finished without producing it")
    return target
