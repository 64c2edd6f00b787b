"""Shared fixtures: the tiny random model, the shared data folder, and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.paths import shared_dir


def shared_path(*parts: str) -> Path:
    """A path inside ../shared; skips the test when it is absent, fails under CI=true."""
    root = shared_dir()
    path = root.joinpath(*parts) if root else None
    if path is None or not path.exists():
        reason = f"shared data {'/'.join(parts)} not found (set LAMINA_SHARED or put it at ../shared)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def tiny_model_and_tokenizer():
    from lamina.agents.models import ModelConfig, load_model

    return load_model(ModelConfig(name="tiny-random"))


@pytest.fixture
def tiny_model(tiny_model_and_tokenizer):
    """A fresh copy of the tiny random Llama (4 blocks) for tests that change weights."""
    import copy

    model, _ = tiny_model_and_tokenizer
    return copy.deepcopy(model)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_and_tokenizer):
    return tiny_model_and_tokenizer[1]
