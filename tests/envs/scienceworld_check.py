"""Whether ScienceWorld's engine can run here: its package and Java. Tests that need it skip with
the reason, except under CI=true, where a missing engine fails them (as shared data does)."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def require_scienceworld() -> None:
    """Skips (fails under CI=true) unless ``scienceworld`` is installed and ``java`` is on PATH."""
    missing = []
    if importlib.util.find_spec("scienceworld") is None:
        missing.append("the scienceworld package (pip install scienceworld==1.2.3)")
    if shutil.which("java") is None:
        missing.append("Java (apt-get install -y default-jre-headless)")
    if missing:
        reason = f"ScienceWorld needs {' and '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
