"""One run per folder, one writer at a time (lamina.trainer.run_folder), for lamina train, lamina sft
and lamina sweep; readers (lamina eval, weights, export) never take the writer lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lamina.cli import compose_config, main
from lamina.errors import ConfigError, FolderInUse, TrainingStopped
from lamina.study.config import compose_sweep_config
from lamina.study.sweep import run_sweep
from lamina.trainer.checkpoint import latest_checkpoint
from lamina.trainer.restore import resolve_checkpoint
from lamina.trainer.run_folder import LOCK_NAME, claim_run_folder, folder_lock, holder
from lamina.trainer.train import train

RUN = [
    "model=tiny-random",
    "env=frozenlake",
    "env.max_steps=2",
    "rollout.group_size=2",
    "rollout.batch_size=1",
    "trainer.progress=false",
    "layers=[1]",
    "eval.episodes=0",
    "logging.tensorboard=false",
    "logging.curves=false",
]
SWEEP = [
    "model=tiny-random",
    "rollout.group_size=2",
    "rollout.batch_size=2",
    "env.max_steps=2",
    "env.train_tasks=2",
    "eval.episodes=2",
    "study.bootstrap=200",
]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_folder_that_holds_a_run_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    train(compose_config([*RUN, "trainer.iterations=1", f"trainer.output_dir={run}"]))
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != LOCK_NAME}
    capsys.readouterr()
    assert main(["train", *RUN, "trainer.iterations=2", f"trainer.output_dir={run}"]) == 2
    err = _one_line_error(capsys)
    assert f"lamina: error: trainer.output_dir='{run}' already holds a run" in err
    assert "trainer.resume=true" in err and "trainer.overwrite=true" in err
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != LOCK_NAME} == before
    assert (
        main(["train", *RUN, "trainer.resume=true", "trainer.overwrite=true", f"trainer.output_dir={run}"])
        == 2
    )
    assert "trainer.resume=true and trainer.overwrite=true" in _one_line_error(capsys)


def test_overwrite_replaces_the_old_run_and_keeps_only_foreign_files(tmp_path, capsys):
    """The issue's case: a second run into a finished one with other settings. With
    trainer.overwrite=true nothing of the old run is left to mix in: not its base evaluation, not its
    checkpoints (which lamina eval/export would pick), not its metrics rows."""
    run = tmp_path / "run"
    first = [*RUN, "trainer.iterations=2", "trainer.save_every=1", "eval.episodes=2", "logging.curves=true"]
    train(compose_config([*first, f"trainer.output_dir={run}"]))
    assert {"eval_base.json", "eval.json", "curves.png"} <= {p.name for p in run.iterdir()}
    (run / "notes.txt").write_text("mine")  # not lamina's: kept
    second = [*RUN, "layers=[2]", "trainer.iterations=1", "eval.episodes=2", "eval.base=false"]
    capsys.readouterr()
    assert main(["train", *second, "trainer.overwrite=true", f"trainer.output_dir={run}"]) == 0
    out = capsys.readouterr().out
    assert "held-out success: " in out
    assert "success: base" not in out  # no "base ... -> trained ..." against the old run's eval_base.json
    names = {p.name for p in run.iterdir()}
    assert "eval_base.json" not in names and "curves.png" not in names
    assert {"notes.txt", "eval.json", "metrics.jsonl", "config.yaml", "checkpoints"} <= names
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000001"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    ckpt, _ = resolve_checkpoint(run)  # what lamina eval and lamina export read
    assert json.loads((ckpt / "state.json").read_text())["blocks"] == [2]
    assert (run / "notes.txt").read_text() == "mine"


def _holder_process(run: Path) -> subprocess.Popen:
    """A real `lamina train` that keeps writing ``run`` (many iterations, resumable)."""
    args = [*RUN, "trainer.iterations=100000", "trainer.resume=true", f"trainer.output_dir={run}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamina.cli", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while (holder(run / LOCK_NAME) or {}).get("pid") != proc.pid:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    return proc


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    first = _holder_process(run)
    try:
        # resume=true: the refusal is for the writer, not for the folder's contents.
        assert main(["train", *RUN, "trainer.resume=true", f"trainer.output_dir={run}"]) == 2
        err = _one_line_error(capsys)
        assert "is being written by another lamina process" in err
        assert f"pid {first.pid} on host {socket.gethostname()} since 20" in err
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # SIGKILL: the kernel dropped its flock, but the lock file still names it.
    assert holder(run / LOCK_NAME)["pid"] == first.pid
    with caplog.at_level(logging.WARNING):
        train(
            compose_config([*RUN, "trainer.iterations=1", "trainer.resume=true", f"trainer.output_dir={run}"])
        )
    assert f"taking over the lock left by pid {first.pid}" in caplog.text
    assert holder(run / LOCK_NAME) is None  # released on the way out: nothing stale for the next run


def test_readers_work_on_a_folder_whose_writer_lock_is_held(tmp_path, capsys):
    run = train(compose_config([*RUN, "trainer.iterations=1", f"trainer.output_dir={tmp_path / 'run'}"]))
    with folder_lock(run, "trainer.output_dir"):  # as a run still writing it would hold it
        held = holder(run / LOCK_NAME)
        assert main(["eval", f"checkpoint={run}", "eval.episodes=2", f"out={tmp_path / 'ev'}"]) == 0
        assert main(["weights", str(run), f"out={tmp_path / 'w'}"]) == 0
        assert main(["export", f"checkpoint={run}", f"out={tmp_path / 'export'}"]) == 0
        assert holder(run / LOCK_NAME) == held
        with pytest.raises(FolderInUse, match=f"pid {os.getpid()} on host"):
            train(compose_config([*RUN, "trainer.resume=true", f"trainer.output_dir={run}"]))
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["episodes"] == 2
    assert (tmp_path / "w" / "weight_change.csv").exists() and any((tmp_path / "export").iterdir())


def test_sft_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "sft"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 0}\n')
    assert main(["sft", "model=tiny-random", "env=frozenlake", f"sft.output_dir={out}"]) == 2
    err = _one_line_error(capsys)
    assert f"sft.output_dir='{out}' already holds a run" in err and "sft.overwrite=true" in err
    assert "resume" not in err  # sft has none
    with claim_run_folder(out, False, True, section="sft", can_resume=False):
        assert not (out / "metrics.jsonl").exists()


# --- sweeps --------------------------------------------------------------------------------------


def _write_eval(run_dir: Path, won: list[bool]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "success_rate": sum(won) / len(won),
        "ci95": [0.0, 1.0],
        "episodes": len(won),
        "mean_return": sum(won) / len(won),
        "seeds": [100_000 + i for i in range(len(won))],
        "won": won,
        "returns": [float(w) for w in won],
    }
    (run_dir / "eval.json").write_text(json.dumps(result))


class FakeArms:
    """Finishes each arm it is given at once (an eval.json), calling ``during`` inside the first."""

    def __init__(self, during=None):
        self.calls: list[str] = []
        self.during = during

    def __call__(self, cfg):
        self.calls.append(Path(cfg.trainer.output_dir).name)
        if self.during is not None and len(self.calls) == 1:
            self.during(cfg)
        _write_eval(Path(cfg.trainer.output_dir), [True, False, True, bool(len(self.calls) % 2)] * 4)
        return Path(cfg.trainer.output_dir)


def test_a_sweep_with_other_settings_is_refused_unless_overwrite(tmp_path):
    common = [*SWEEP, f"study.output_dir={tmp_path}"]
    run_sweep(compose_sweep_config([*common, "study.layers=[0]"]), train_fn=FakeArms())
    (tmp_path / "block00-seed0" / "mine.txt").write_text("old arm")
    # Same settings: resumed (nothing to do); more blocks: extended.
    again = FakeArms()
    run_sweep(compose_sweep_config([*common, "study.layers=[0,1]"]), train_fn=again)
    assert again.calls == ["block01-seed0"]
    other = [*common, "study.layers=[1]", "trainer.iterations=9"]
    with pytest.raises(ConfigError, match="trainer.iterations=4.*study.overwrite=true"):
        run_sweep(compose_sweep_config(other), train_fn=FakeArms())
    fresh = FakeArms()
    run_sweep(compose_sweep_config([*other, "study.overwrite=true"]), train_fn=fresh)
    assert fresh.calls == ["base-seed0", "full-seed0", "block01-seed0"]
    assert not (tmp_path / "block00-seed0").exists()  # the old sweep's arm is gone, not mixed in
    assert "iterations: 9" in (tmp_path / "sweep.yaml").read_text()
    assert (tmp_path / "contribution.csv").read_text().splitlines()[-1].startswith("1,")


def test_a_folder_with_files_but_no_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("{}\n")  # e.g. study.output_dir pointed at a run folder
    assert main(["sweep", *SWEEP, "study.layers=[0]", f"study.output_dir={tmp_path}"]) == 2
    err = _one_line_error(capsys)
    assert "holds files but no sweep.yaml (metrics.jsonl)" in err and "study.overwrite=true" in err
    assert not (tmp_path / "sweep.yaml").exists()
    with pytest.raises(ConfigError, match="a sweep's arms always resume"):
        run_sweep(compose_sweep_config([*SWEEP, "trainer.overwrite=true", f"study.output_dir={tmp_path}"]))


def test_a_second_sweep_into_a_running_ones_folder_is_refused(tmp_path, capsys):
    common = [*SWEEP, "study.layers=[0]", f"study.output_dir={tmp_path}"]
    codes = []

    def second_sweep(_cfg):
        codes.append(main(["sweep", *common]))
        codes.append(main(["train", *RUN, "trainer.resume=true", f"trainer.output_dir={tmp_path}"]))

    run_sweep(compose_sweep_config(common), train_fn=FakeArms(during=second_sweep))
    assert codes == [2, 2]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"another lamina process (pid {os.getpid()} on host" in e for e in err)
    assert err[0].startswith(f"lamina: error: study.output_dir='{tmp_path}'")


def _finished_base_and_full(sweep_dir: Path, cfg) -> None:
    """A sweep folder whose base and full arms are finished: only the block arms are left to run."""
    (sweep_dir / "sweep.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    for arm in ("base-seed0", "full-seed0"):
        _write_eval(sweep_dir / arm, [True, False] * 4)


def test_a_sweep_arm_respects_its_run_folder_lock(tmp_path):
    """An arm whose folder another process writes fails (named, error.txt) instead of writing it too."""
    cfg = compose_sweep_config([*SWEEP, "study.layers=[0]", f"study.output_dir={tmp_path}"])
    _finished_base_and_full(tmp_path, cfg)
    with folder_lock(tmp_path / "block00-seed0", "trainer.output_dir"):
        with pytest.raises(TrainingStopped, match="1 arm\\(s\\) failed: block00-seed0"):
            run_sweep(cfg)  # the real lamina.backend.train
    assert "FolderInUse" in (tmp_path / "block00-seed0" / "error.txt").read_text()
    assert latest_checkpoint(tmp_path / "block00-seed0") is None


@pytest.mark.slow
def test_ray_arms_run_while_the_sweep_holds_its_folder_lock(tmp_path):
    """Through Ray: the arms' processes take only their own folders' locks (no wait on the sweep's),
    and an arm whose folder is held elsewhere fails instead of writing it."""
    common = [*SWEEP, "trainer.iterations=1", "study.executor=ray", f"study.output_dir={tmp_path}"]
    cfg = compose_sweep_config([*common, "study.layers=[0,3]"])
    _finished_base_and_full(tmp_path, cfg)
    with folder_lock(tmp_path / "block03-seed0", "trainer.output_dir"):
        with pytest.raises(TrainingStopped, match="1 arm\\(s\\) failed: block03-seed0"):
            run_sweep(cfg)
    assert (tmp_path / "block00-seed0" / "eval.json").exists()
    assert "FolderInUse" in (tmp_path / "block03-seed0" / "error.txt").read_text()
    assert holder(tmp_path / LOCK_NAME) is None  # the sweep released its own lock
