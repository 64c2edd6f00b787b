"""Synthetic sweep folders: arm run folders holding only ``eval.json`` (what the analysis reads)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweep_files import write_eval

from lamina.agents.models import ModelConfig
from lamina.study.config import StudyConfig, SweepConfig


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
