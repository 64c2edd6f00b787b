"""The backend choice: ``backend=native`` trains in this process (``lamina.trainer.train``),
``backend=verl`` hands the run to verl on Ray (``lamina.integrations.verl.launch``).

It sits above both, so the native trainer never imports the verl backend; the verl backend may
use the trainer's pieces.
"""

from __future__ import annotations

from pathlib import Path

from lamina.errors import ConfigError
from lamina.trainer.config import BACKENDS, RunConfig


def train(cfg: RunConfig) -> Path:
    """Trains with ``cfg.backend`` and returns the run's output folder."""
    if cfg.backend == "verl":
        from lamina.integrations.verl.launch import run

        return run(cfg)
    if cfg.backend != "native":
        raise ConfigError(f"backend={cfg.backend!r}; valid: {', '.join(BACKENDS)}")
    from lamina.trainer.train import train as train_native

    return train_native(cfg)
