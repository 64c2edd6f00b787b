"""Where lamina finds shared data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``LAMINA_CACHE``, else ``~/.cache/lamina``; created on first use."""
    path = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache" / "lamina")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir() -> Path | None:
    """The read-only shared data folder: ``LAMINA_SHARED``, else ``../shared`` beside the repo."""
    env = os.environ.get("LAMINA_SHARED")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parent.parent.parent / "shared"
    return candidate if candidate.is_dir() else None
