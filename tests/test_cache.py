"""Shared caches under concurrency: processes that start together build each entry once, publish it
whole, and leave no staging behind (lamina.cache, used by the model and TextWorld caches)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lamina.cache import build_once, cache_lock, lock_path, stale_partials

REPO = Path(__file__).resolve().parent.parent
PROCESSES = 4

# Each process imports everything first, then waits at a barrier, so the cache calls really overlap.
BARRIER = """
import os, pathlib, sys, time
barrier = pathlib.Path(sys.argv[1])
(barrier / f"ready-{os.getpid()}").touch()
while not (barrier / "go").exists():
    time.sleep(0.01)
"""


def run_together(setup: str, body: str, tmp_path: Path, timeout: float) -> list[tuple[int, str, str]]:
    """Starts ``PROCESSES`` interpreters running ``setup``, a barrier, then ``body`` (``sys.argv[2]``
    is the process's index), with ``LAMINA_CACHE`` on an empty folder; returns each one's
    ``(returncode, stdout, stderr)``."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "LAMINA_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    code = textwrap.dedent(setup) + BARRIER + textwrap.dedent(body)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(barrier), str(index)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + timeout
        while len(list(barrier.glob("ready-*"))) < PROCESSES:
            if any(p.poll() is not None for p in procs):
                break  # one died during its imports: let communicate() report it
            if time.monotonic() > deadline:
                pytest.fail("the processes did not reach the start barrier in time")
            time.sleep(0.05)
        (barrier / "go").touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out, err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_all_succeeded(results: list[tuple[int, str, str]]) -> None:
    for rc, _, err in results:
        assert rc == 0, f"a process failed (exit {rc}):\n{err[-3000:]}"


def entries(folder: Path) -> list[str]:
    """What a folder holds, lock files aside."""
    locks = {p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".lock")}
    return sorted(p.name for p in folder.iterdir() if p.name not in locks)


# -- the mechanism ----------------------------------------------------------------------------------


def test_build_once_builds_once_across_processes(tmp_path):
    setup = """
    from pathlib import Path
    from lamina.cache import build_once
    from lamina.paths import cache_dir
    """
    body = """
    target = cache_dir() / "entry"
    def build(staging):
        with open(cache_dir() / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        staging.mkdir()
        time.sleep(0.5)  # a slow build: the others must wait for it, not start their own
        (staging / "data.txt").write_text("done")
    print(build_once(target, build))
    """
    results = run_together(setup, body, tmp_path, timeout=60)
    assert_all_succeeded(results)
    cache = tmp_path / "cache"
    assert len((cache / "builds.log").read_text().split()) == 1
    assert {out.strip() for _, out, _ in results} == {str(cache / "entry")}
    assert entries(cache) == ["builds.log", "entry"]
    assert (cache / "entry" / "data.txt").read_text() == "done"


def test_stale_partials_are_removed(tmp_path):
    target = tmp_path / "entry"
    # What a killed build leaves: the old fixed name and a per-process staging folder.
    for name in ("entry.partial", "entry.partial-12345-deadbeef"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.bin").write_bytes(b"x")

    def build(staging: Path) -> None:
        staging.mkdir()
        (staging / "data.txt").write_text("done")

    assert build_once(target, build) == target
    assert stale_partials(target) == [] and (target / "data.txt").read_text() == "done"
    assert entries(tmp_path) == ["entry"]


def test_stale_partials_beside_a_ready_entry_are_removed_unless_in_use(tmp_path):
    target = tmp_path / "entry"
    target.mkdir()
    (tmp_path / "entry.partial").mkdir()  # the leftover of the reported crash, next to the winner

    def build(staging: Path) -> None:
        raise AssertionError("the entry is ready: nothing to build")

    # While another builder holds the lock its staging is in use and must stay.
    with cache_lock(target):
        build_once(target, build)
        assert [p.name for p in stale_partials(target)] == ["entry.partial"]
    build_once(target, build)
    assert stale_partials(target) == [] and lock_path(target).exists()


def test_failed_build_leaves_no_staging_and_the_next_one_builds(tmp_path):
    target = tmp_path / "entry"

    def broken(staging: Path) -> None:
        staging.mkdir()
        (staging / "half.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(target, broken)
    assert entries(tmp_path) == []
    build_once(target, lambda staging: staging.write_text("done"))
    assert target.read_text() == "done"


def test_incomplete_entry_is_replaced(tmp_path):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "config.json").write_text("{}")  # a folder without its weights file

    def build(staging: Path) -> None:
        staging.mkdir()
        (staging / "weights.bin").write_text("w")

    build_once(target, build, ready=lambda: (target / "weights.bin").exists())
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]


# -- the real caches --------------------------------------------------------------------------------


def test_textworld_game_compiled_once_by_concurrent_processes(tmp_path):
    setup = """
    from lamina.envs.textworld import game_path
    """
    body = """
    path = game_path("tw-treasure_hunter", {"level": 1}, 3)
    print(path, path.stat().st_ino)
    """
    results = run_together(setup, body, tmp_path, timeout=120)
    assert_all_succeeded(results)
    # Same path and same inode everywhere: one compiled game, never replaced after a process got it.
    assert len({out.strip() for _, out, _ in results}) == 1
    path = Path(results[0][1].split()[0])
    assert entries(path.parent) == ["game_3.json", "game_3.z8"]
    assert entries(tmp_path / "cache" / "textworld") == [path.parent.name]

    import lamina.envs as envs

    game_dir = str(tmp_path / "cache" / "textworld")
    env = envs.make("textworld", challenge="tw-treasure_hunter", settings={"level": 1}, game_dir=game_dir)
    try:
        obs, info = env.reset(seed=3)
        assert obs and info["admissible_actions"]
        assert entries(path.parent) == ["game_3.json", "game_3.z8"]  # it used the game, built nothing
    finally:
        env.close()


@pytest.mark.slow  # about a minute on 2 cores: one SmolLM2 download and conversion, 4 torch imports
def test_model_converted_once_by_concurrent_processes(tmp_path):
    """The reported crash: ``lamina train`` and ``lamina train model=tiny-random`` (twice each) on a
    fresh machine all convert SmolLM2 into the cache at once."""
    setup = """
    from lamina.agents.models import ModelConfig, load_model, smollm2_checkpoint
    """
    body = """
    if int(sys.argv[2]) % 2:
        load_model(ModelConfig(name="tiny-random"))
    print(smollm2_checkpoint())
    """
    results = run_together(setup, body, tmp_path, timeout=170)
    assert_all_succeeded(results)
    models = tmp_path / "cache" / "models"
    assert entries(models) == ["SmolLM2-135M-Instruct"]
    assert {out.strip().splitlines()[-1] for _, out, _ in results} == {str(models / "SmolLM2-135M-Instruct")}

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lamina.agents.models import SMOLLM2_BLOCKS

    checkpoint = models / "SmolLM2-135M-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, use_safetensors=True)
    assert model.config.num_hidden_layers == SMOLLM2_BLOCKS
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
