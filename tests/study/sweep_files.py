"""Writing what a finished arm leaves for the analysis: its ``eval.json``."""

from __future__ import annotations

import json
from pathlib import Path


def write_eval(
    run_dir: Path, won: list[float], returns: list[float] | None = None, first_seed: int = 100_000
):
    """An ``eval.json`` as ``lamina.trainer.evaluate`` writes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    returns = returns if returns is not None else [float(w) for w in won]
    (run_dir / "eval.json").write_text(
        json.dumps(
            {
                "success_rate": sum(won) / len(won),
                "ci95": [0.0, 1.0],
                "episodes": len(won),
                "mean_return": sum(returns) / len(returns),
                "seeds": [first_seed + i for i in range(len(won))],
                "won": [bool(w) for w in won],
                "returns": returns,
            }
        )
    )
