"""What every ``lamina bench`` row is made of, and how its numbers are taken.

A row compares lamina with a baseline measured in the same run on the same machine (ratios, not
seconds, are what carry over between machines). Each bench module exposes
``rows(quick: bool) -> list[Row]``; ``--quick`` sizes everything to seconds with the tiny random
model so CI can check that the table is produced and every ratio is finite.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the table. ``ratio`` = lamina / baseline of the measured quantity (time or memory:
    lower is better; a rate: higher is better, said in ``target``)."""

    what: str
    baseline: str
    lamina: str
    ratio: float
    target: str
    met: bool | None = None  # None: no target to meet (context rows)

    def cells(self) -> list[str]:
        # Three significant digits: a small ratio (an error over its bound) must not print as 0.00x.
        ratio = f"{self.ratio:.3g}x" if math.isfinite(self.ratio) else "n/a"
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return [self.what, self.baseline, self.lamina, ratio, self.target, met]


def machine() -> str:
    """CPU model and cores (or the GPU), and torch's version."""
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        device = f"{model}, {os.cpu_count()} cores"
    return f"{device}, torch {torch.__version__}"


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (the least disturbed by other processes)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _child(target, args, queue):
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = target(*args)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    queue.put((result, peak))


def in_fresh_process(target: Callable, *args):
    """Runs ``target(*args)`` in a new process; returns (its result, its peak memory in bytes:
    the process's peak RSS on CPU, the peak allocated GPU memory on CUDA). A fresh process per
    measurement keeps one measurement's peak from hiding another's."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark process {target.__name__} exited with {proc.exitcode}")
    return result


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"
