"""A full disk in one sweep arm stops the whole sweep in one line: the finished arms stay, no later
arm starts, and the same command continues once space is free (the arm from its last good
checkpoint). Any other failure of an arm still only marks that arm failed."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from fake_ray import FakeRay
from sweep_files import write_eval
from test_sweep import FAST as SWEEP_FAST
from test_sweep import ray_jobs

from lamina.cli import main
from lamina.errors import DiskFull
from lamina.study import executors
from lamina.study.config import compose_sweep_config
from lamina.study.sweep import run_sweep
from lamina.trainer import checkpoint
from lamina.trainer.checkpoint import checkpoint_problem, latest_checkpoint

# test_sweep's tiny settings, two single-block arms
FAST = [*SWEEP_FAST, "study.layers=[0,1]"]
ARMS = ["base-seed0", "full-seed0", "block00-seed0", "block01-seed0"]  # the order they run in


def _no_space(path: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class Arms:
    """Runs arms by writing the eval.json a finished one leaves; ``fail`` (arm folder name) raises
    ``error`` instead."""

    def __init__(self, fail: str | None = None, error: Exception | None = None):
        self.fail, self.error, self.calls = fail, error, []

    def __call__(self, cfg):
        self.calls.append(Path(cfg.trainer.output_dir).name)
        if self.calls[-1] == self.fail:
            raise self.error
        write_eval(Path(cfg.trainer.output_dir), [1, 0, 1, 0])
        return cfg.trainer.output_dir


@pytest.mark.parametrize(
    "error",
    [
        _no_space("/sweep/block00-seed0/eval.json.partial"),
        DiskFull(
            "no space left on device writing checkpoint x in y (a checkpoint of this run takes about "
            "1.2 MB, 0.0 MB free); the last good checkpoint is z; free space there, then continue with "
            "trainer.resume=true"
        ),
        RuntimeError("Error while serializing: I/O error: Disk quota exceeded (os error 122)"),
    ],
    ids=["enospc", "diskfull", "quota"],
)
def test_a_full_disk_in_one_arm_stops_the_sweep(tmp_path, error):
    cfg = compose_sweep_config([*FAST, f"study.output_dir={tmp_path}"])
    first = Arms(fail="block00-seed0", error=error)
    with pytest.raises(DiskFull) as stopped:
        run_sweep(cfg, train_fn=first)
    message = str(stopped.value)
    assert first.calls == ARMS[:3]  # block01 never started
    assert len(message.splitlines()) == 1 and message.startswith("sweep arm block00-seed0: no space left")
    assert "run the same lamina sweep again" in message and "trainer.resume=true" not in message
    if not isinstance(error, DiskFull):  # a raw error: the folder and the checkpoint size are added
        assert f" in {tmp_path / 'block00-seed0'} (" in message
    assert not (tmp_path / "block00-seed0" / "error.txt").exists()  # nothing more written
    for name in ARMS[:2]:
        assert json.loads((tmp_path / name / "eval.json").read_text())["episodes"] == 4
    second = Arms()
    run_sweep(cfg, train_fn=second)
    assert second.calls == ARMS[2:]  # the finished arms are kept
    assert len((tmp_path / "contribution.csv").read_text().splitlines()) == 1 + 4


def test_other_failures_still_only_mark_the_arm_failed(tmp_path):
    cfg = compose_sweep_config([*FAST, f"study.output_dir={tmp_path}"])
    arms = Arms(fail="block00-seed0", error=OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(Exception, match="1 arm\\(s\\) failed: block00-seed0"):
        run_sweep(cfg, train_fn=arms)
    assert arms.calls == ARMS


def test_a_full_disk_in_a_ray_arm_stops_the_sweep_and_cancels_the_others(tmp_path):
    from lamina.study.arms import Arm

    jobs, status = ray_jobs(tmp_path, [Arm("base", 0), Arm("block", 0, 0), Arm("block", 0, 1)], FAST)
    ray = FakeRay(_no_space())
    with pytest.raises(
        DiskFull, match=f"^sweep arm base-seed0: no space left on device .* in {tmp_path}/base"
    ):
        executors._submit_and_wait(ray, jobs, status, 0.0, 1.0)
    assert ray.cancelled == ["block00-seed0", "block01-seed0"]


@pytest.mark.slow
def test_a_real_sweep_meets_a_full_disk_during_a_checkpoint_and_continues(tmp_path, monkeypatch, capsys):
    """The tiny model's sweep: block00's second checkpoint meets ENOSPC inside optimizer.pt."""
    args = ["sweep", *FAST, "trainer.iterations=2", "trainer.save_every=1", f"study.output_dir={tmp_path}"]
    real_save = torch.save

    def torch_save(obj, path, *a, **kw):
        if "block00-seed0/checkpoints/.iter_000002.partial" in str(path):
            Path(path).write_bytes(b"\0" * 1000)
            raise _no_space(str(path))
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", torch_save)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    arm = tmp_path / "block00-seed0"
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        f"lamina: stopped: sweep arm block00-seed0: no space left on device writing checkpoint "
        f"{arm}/checkpoints/iter_000002 in {arm} (a checkpoint of this run takes about "
    )
    good = latest_checkpoint(arm)
    assert good == arm / "checkpoints" / "iter_000001" and checkpoint_problem(good) is None
    assert list((arm / "checkpoints").glob(".*partial*")) == []
    assert not (tmp_path / "block01-seed0").exists() and not (tmp_path / "contribution.csv").exists()
    finished = {n: (tmp_path / n / "eval.json").read_bytes() for n in ARMS[:2]}
    first_row = (arm / "metrics.jsonl").read_text().splitlines()[0]  # its timings differ if redone
    monkeypatch.undo()  # space is free again
    assert main(args) == 0
    assert {n: (tmp_path / n / "eval.json").read_bytes() for n in ARMS[:2]} == finished  # kept, not rerun
    rows = [json.loads(line) for line in (arm / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    assert (arm / "metrics.jsonl").read_text().splitlines()[0] == first_row  # resumed, not started over
    assert all((tmp_path / n / "eval.json").exists() for n in ARMS)
    assert len((tmp_path / "contribution.csv").read_text().splitlines()) == 1 + 4
