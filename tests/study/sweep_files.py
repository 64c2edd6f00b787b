"""Writing what a finished arm leaves for the analysis: its ``eval.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lamina.agents.models import ModelConfig
from lamina.study.config import StudyConfig, SweepConfig


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


@pytest.fixture
def make_sweep(tmp_path):
    """``make_sweep(name, {arm folder: won list}, num_blocks)`` -> a sweep folder."""

    def make(name: str, arms: dict[str, list[float]], num_blocks: int = 4, metric: str = "success") -> Path:
        root = tmp_path / name
        for arm, won in arms.items():
            write_eval(root / arm, won)
        cfg = SweepConfig(
            model=ModelConfig(name="tiny-random", tiny_layers=num_blocks),
            study=StudyConfig(output_dir=str(root), metric=metric, bootstrap=500),
        )
        (root / "sweep.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return root

    return make
