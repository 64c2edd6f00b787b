"""Stopping a run cleanly: the first SIGINT or SIGTERM finishes the current iteration, saves a
checkpoint and stops; a second Ctrl-C stops at once (the checkpoints already written stay good).

    with GracefulStop() as stop:
        for iteration in ...:
            ...
            if stop.requested:
                save(); break
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager that turns SIGINT/SIGTERM into a request (``requested``: the signal name)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.saved: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for sig in SIGNALS:
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.requested = self.requested or name
        print(
            f"lamina: {name}: finishing this iteration, then saving a checkpoint and stopping "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
