"""Long runs survive kills, signals and damaged checkpoints, and lose nothing."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from lamina.cli import compose_config
from lamina.trainer import checkpoint
from lamina.trainer.checkpoint import latest_checkpoint
from lamina.trainer.signals import GracefulStop
from lamina.trainer.train import train

RUN = [
    "model=tiny-random",
    "env=frozenlake",
    "env.max_steps=3",
    "rollout.group_size=3",
    "rollout.batch_size=1",
    "trainer.lr=1e-2",
    "eval.episodes=0",
    "trainer.progress=false",
    "layers=[1,2]",
    "trainer.save_every=1",
]
# timings and memory vary run to run
TIMING = {"rollout_s", "update_s", "rss_mb", "max_rss_mb", "peak_memory_mb"}


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _final_tensors(run, done):
    return load_file(str(run / "checkpoints" / f"iter_{done:06d}" / "trainable.safetensors"))


def test_damaged_or_half_written_checkpoint_is_skipped(tmp_path, caplog):
    run = train(compose_config([*RUN, "trainer.iterations=3", f"trainer.output_dir={tmp_path}"]))
    newest = run / "checkpoints" / "iter_000003"
    data = bytearray((newest / "trainable.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one corrupted byte in the tensor data
    (newest / "trainable.safetensors").write_bytes(bytes(data))
    (run / "checkpoints" / "iter_000002" / "manifest.json").unlink()  # a save that never finished
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(run) == run / "checkpoints" / "iter_000001"
    assert "iter_000003: trainable.safetensors does not match its checksum" in caplog.text
    assert "iter_000002: no manifest" in caplog.text
    # Resuming redoes iterations 1-2 from the good checkpoint and drops their old metrics rows.
    train(compose_config([*RUN, "trainer.iterations=3", "trainer.resume=true", f"trainer.output_dir={run}"]))
    assert [r["iteration"] for r in _metrics(run)] == [0, 1, 2]


def test_checkpoint_is_written_under_a_temporary_name(tmp_path, monkeypatch):
    """While a checkpoint's files are hashed only the hidden staging folder exists (a crash there
    leaves no iter_* folder); the final name appears, manifest included, with one rename."""
    real, seen = checkpoint._sha256, []

    def observe(path):
        seen.append(sorted(p.name for p in (tmp_path / "checkpoints").iterdir()))
        return real(path)

    monkeypatch.setattr(checkpoint, "_sha256", observe)
    model = torch.nn.Linear(2, 2)
    final = checkpoint.save_checkpoint(
        tmp_path, 0, model, ["weight"], torch.optim.AdamW(model.parameters()), {}
    )
    assert seen and all(names == [".iter_000001.partial"] for names in seen)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_000001"]
    assert checkpoint.checkpoint_problem(final) is None


def test_keep_checkpoints_prunes_the_oldest(tmp_path):
    run = train(
        compose_config(
            [*RUN, "trainer.iterations=4", "trainer.keep_checkpoints=2", f"trainer.output_dir={tmp_path}"]
        )
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000003", "iter_000004"]


def _cli(run, iterations, extra=()):
    args = [f"trainer.output_dir={run}", f"trainer.iterations={iterations}", "trainer.resume=true", *extra]
    return [sys.executable, "-m", "lamina.cli", "train", *RUN, *args]


def test_sigterm_saves_and_stops_then_resume_finishes(tmp_path):
    run = tmp_path / "run"
    # No periodic saves: the checkpoint checked below is the one the signal asked for.
    proc = subprocess.Popen(_cli(run, 50, ["trainer.save_every=0"]), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text().strip():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert "lamina: stopped: SIGTERM after iteration" in err and "trainer.resume=true" in err
    done = len(_metrics(run))
    assert 1 <= done < 50 and latest_checkpoint(run).name == f"iter_{done:06d}"
    # The resume picks up after the saved iteration and finishes one more.
    subprocess.run(_cli(run, done + 1, ["trainer.save_every=0"]), check=True, capture_output=True)
    assert [r["iteration"] for r in _metrics(run)] == list(range(done + 1))


def test_second_signal_stops_at_once():
    """The first SIGINT inside an iteration is a request; the second interrupts there and then."""
    with GracefulStop() as stop:
        with stop.iteration():
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested == "SIGINT"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler runs at the next bytecode; never reached


def test_double_ctrl_c_exits_130_and_keeps_the_checkpoints(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(run, 50), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while latest_checkpoint(run) is None:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    # The second signal as soon as the first is acknowledged: a fixed pause let a short iteration
    # finish and stop gracefully first (exit 1) on a loaded machine.
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "finishing this iteration" in line:
            break
    proc.send_signal(signal.SIGINT)
    err = "".join(seen) + proc.stderr.read()
    proc.wait(timeout=600)
    assert proc.returncode == 130, err
    assert "SIGINT: finishing this iteration" in err and "stopped at once" in err
    assert latest_checkpoint(run) is not None  # what was written stays good


def _staging(run):
    root = run / "checkpoints"
    return list(root.glob(".iter_*.partial")) if root.exists() else []


def _assert_same_as(run, reference, iterations):
    ref = _final_tensors(reference, iterations)
    got = _final_tensors(run, iterations)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert _metrics(run) == _metrics(reference)


@pytest.mark.slow
def test_random_sigkills_lose_nothing(tmp_path):
    """12 SIGKILLs, each followed by a resume: 8 at random moments, 4 inside a checkpoint write
    (the test's slow-save hook keeps each write open for 0.3 s so the kill can land there). The
    final tensors and metrics equal an uninterrupted run's.

    Kill moments are fractions of the reference run's own duration, so the test means the same on a
    fast machine and a slow one. A resumed run has less left to do and may finish before its kill:
    then it is checked against the reference and started again from nothing."""
    iterations = 4
    reference = tmp_path / "reference"
    started = time.monotonic()
    subprocess.run(_cli(reference, iterations), check=True, capture_output=True)
    reference_s = time.monotonic() - started
    run = tmp_path / "killed"
    rng = random.Random(0)
    env = {**os.environ, "LAMINA_TEST_SLOW_SAVE_S": "0.3"}
    kills, inside_save = 0, 0
    for _ in range(60):
        if kills == 12:
            break
        proc = subprocess.Popen(
            _cli(run, iterations), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if kills % 3 == 2:  # wait for a checkpoint write to start
            while proc.poll() is None and not _staging(run):
                time.sleep(0.02)
            inside_save += bool(_staging(run))
        else:
            time.sleep(rng.uniform(0.2, 1.0) * reference_s)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            kills += 1
            continue
        assert proc.returncode == 0
        _assert_same_as(run, reference, iterations)
        shutil.rmtree(run)
    assert kills == 12 and inside_save >= 3
    assert subprocess.run(_cli(run, iterations), env=env, capture_output=True).returncode == 0
    _assert_same_as(run, reference, iterations)
