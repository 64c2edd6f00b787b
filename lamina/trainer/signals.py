"""Stopping a run cleanly: the first SIGINT or SIGTERM during a training iteration finishes it,
saves a checkpoint and stops; outside an iteration (evaluation) it stops at once, and so does a
second signal (the checkpoints already written stay good).

    with GracefulStop() as stop:
        for iteration in ...:
            ...
            if stop.requested:
                save(); break
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

from lamina.errors import StoppedBySignal

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# What signal.signal() takes and returns.
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class GracefulStop:
    """Context manager that turns SIGINT/SIGTERM into a request (``requested``: the signal name)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.saved: dict[int, SignalHandler] = {}
        self.deferring = False  # inside an iteration: finish it first; elsewhere stop at once

    @contextlib.contextmanager
    def iteration(self):
        """Marks the work a signal waits for (rollout, update, checkpoint)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for sig in SIGNALS:
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> Literal[False]:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt  # the second signal: stop now
        self.requested = name
        if not self.deferring:  # evaluating or starting up: nothing that a checkpoint would keep
            raise StoppedBySignal(
                f"{name} outside a training iteration; the checkpoints written so far are kept"
            )
        print(
            f"lamina: {name}: finishing this iteration, then saving a checkpoint and stopping "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
