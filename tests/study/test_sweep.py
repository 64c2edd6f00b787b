"""lamina sweep: config, arms, resume, failures; end to end on the tiny model (slow)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sweep_files import write_eval

from lamina.cli import main
from lamina.errors import ConfigError, StoppedBySignal, TrainingStopped
from lamina.study.arms import Arm, arm_config, check_same_settings, parse_arm_name, plan_arms, study_arms
from lamina.study.config import compose_sweep_config
from lamina.study.ensemble import evaluate_ensemble
from lamina.study.sweep import run_sweep
from lamina.study.weights import weight_change
from lamina.trainer.train import train

FAST = [
    "model=tiny-random",
    "rollout.group_size=2",
    "rollout.batch_size=2",
    "env.max_steps=2",
    "env.train_tasks=2",
    "eval.episodes=2",
    "study.bootstrap=200",
]


def test_config_defaults_and_presets():
    cfg = compose_sweep_config([])
    assert cfg.study.layers == "all" and cfg.study.seeds == [0] and cfg.study.executor == "serial"
    assert cfg.trainer.save_every == 1  # arms checkpoint every iteration, so they resume
    demo = compose_sweep_config(["study=demo"])
    assert demo.study.layers == [0, 7, 15, 22, 29] and demo.study.seeds == [0, 1] and demo.eval.episodes == 64
    gigpo = compose_sweep_config(["study=demo_gigpo"])
    assert gigpo.algorithm.estimator == "gigpo" and gigpo.study.output_dir == "runs/study/demo-gigpo"
    assert compose_sweep_config(["study=demo", "study.seeds=[3]"]).study.seeds == [3]
    second = compose_sweep_config(["study=tw_hard"])
    assert second.env.kwargs["settings"]["level"] == 3 and second.algorithm.episode_stats == "trajectory"
    assert (second.rollout.batch_size, second.trainer.iterations, second.eval.episodes) == (4, 6, 128)
    lrs = {a.name(30): a.lr for a in study_arms(second.study, [0, 15], 30, second.trainer.lr)}
    assert lrs["full-seed0"] == 1e-4 and lrs["lora1@all-seed0"] == 1e-3 and lrs["block15-seed0"] == 1e-3


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("study.executor=slurm", "study.executor='slurm'; valid: serial, ray"),
        ("study.metric=reward", "study.metric='reward'; valid: success, return"),
        ("study.seeds=[0,0]", "study.seeds=[0, 0]: give distinct non-negative integers"),
        ("study=nope", "unknown study 'nope'; valid: default, demo, demo_gigpo"),
        ("study.layers=[9]", "study.layers=[9]: block 9 is outside 0..3"),
        ("eval.episodes=0", "eval.episodes=0: a sweep scores each arm"),
    ],
)
def test_bad_settings_fail_with_one_line(override, expected, capsys, tmp_path):
    code = main(["sweep", *FAST, f"study.output_dir={tmp_path}", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1


def test_arms_names_order_and_configs(tmp_path):
    arms = plan_arms([2, 0], [0, 1])
    names = [a.name(30) for a in arms]
    assert names[:4] == ["base-seed0", "base-seed1", "full-seed0", "full-seed1"]
    assert names[4:] == ["block00-seed0", "block02-seed0", "block00-seed1", "block02-seed1"]
    assert all(parse_arm_name(n) == a for n, a in zip(names, arms, strict=True))
    assert parse_arm_name("block100-seed3") == Arm("block", 3, 100) and parse_arm_name("compare") is None
    shared = compose_sweep_config(FAST).run_config()
    base = arm_config(shared, Arm("base", 1), tmp_path, 4)
    assert base.trainer.iterations == 0 and base.layers == "none" and base.trainer.seed == 1
    block = arm_config(shared, Arm("block", 0, 3), tmp_path, 4)
    assert (
        block.layers == [3]
        and block.trainer.resume
        and block.trainer.output_dir == str(tmp_path / "block03-seed0")
    )
    assert block.trainer.iterations == shared.trainer.iterations


def test_changed_settings_are_refused_but_not_devices_or_seeds(tmp_path):
    cfg = compose_sweep_config([*FAST, f"study.output_dir={tmp_path}"])
    (tmp_path / "sweep.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    moved = compose_sweep_config([*FAST, "trainer.device=cpu", "study.seeds=[0,1]", "rollout.env_workers=2"])
    check_same_settings(tmp_path, moved.run_config())
    longer = compose_sweep_config([*FAST, "trainer.iterations=9"])
    with pytest.raises(ConfigError, match="trainer.iterations=4, but this one asks for trainer.iterations=9"):
        check_same_settings(tmp_path, longer.run_config())


class Recorder:
    """Records each arm it is asked to run and writes the eval.json a finished run would write."""

    def __init__(self, fail: str | None = None, error: Exception | None = None):
        self.calls = []
        self.fail = fail
        self.error = error or RuntimeError("out of memory")

    def __call__(self, cfg):
        self.calls.append(cfg)
        if self.fail and cfg.trainer.output_dir.endswith(self.fail):
            raise self.error
        won = {"none": [0, 0, 0, 1], "all": [1, 1, 1, 0]}.get(
            cfg.layers if isinstance(cfg.layers, str) else "", [1, 1, 0, 0]
        )
        write_eval(Path(cfg.trainer.output_dir), won * 5)
        return cfg.trainer.output_dir


def test_resume_skips_finished_arms_and_retries_failed_ones(tmp_path):
    cfg = compose_sweep_config([*FAST, "study.layers=[0,1]", f"study.output_dir={tmp_path}"])
    first = Recorder(fail="block01-seed0")
    with pytest.raises(TrainingStopped, match="1 arm\\(s\\) failed: block01-seed0 \\(see error.txt"):
        run_sweep(cfg, train_fn=first)
    assert len(first.calls) == 4
    assert "RuntimeError: out of memory" in (tmp_path / "block01-seed0" / "error.txt").read_text()
    assert (tmp_path / "contribution.csv").exists()  # the finished arms are already scored
    failing_base = Recorder(fail="base-seed0")
    other = compose_sweep_config([*FAST, "study.layers=[0]", f"study.output_dir={tmp_path / 'other'}"])
    with pytest.raises(TrainingStopped, match="not finished yet: base; failed arm\\(s\\): base-seed0"):
        run_sweep(other, train_fn=failing_base)
    second = Recorder()
    run_sweep(cfg, train_fn=second)
    assert [c.trainer.output_dir for c in second.calls] == [str(tmp_path / "block01-seed0")]
    assert second.calls[0].trainer.resume
    assert not (tmp_path / "block01-seed0" / "error.txt").exists()
    rows = (tmp_path / "contribution.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 + 2  # header, base, full, blocks 0 and 1


@pytest.mark.slow
def test_a_signal_stops_the_whole_sweep(tmp_path):
    """SIGINT/SIGTERM inside an arm is the user stopping the sweep, not a failed arm to skip."""
    cfg = compose_sweep_config([*FAST, "study.layers=[0,1]", f"study.output_dir={tmp_path}"])
    stopper = Recorder(fail="full-seed0", error=StoppedBySignal("SIGTERM after iteration 0"))
    with pytest.raises(StoppedBySignal):
        run_sweep(cfg, train_fn=stopper)
    assert [Path(c.trainer.output_dir).name for c in stopper.calls] == ["base-seed0", "full-seed0"]
    assert not (tmp_path / "full-seed0" / "error.txt").exists()


def test_tiny_sweep_end_to_end_resumes_a_half_finished_arm(tmp_path):
    """Three blocks of the tiny model: blocks 0 first, with block 1 left half-finished (one of its
    two iterations) as an interruption leaves it; then the sweep extended to blocks 0-2 skips the
    finished arms, resumes block 1 from its checkpoint and trains block 2."""
    common = [*FAST, "trainer.iterations=2", f"study.output_dir={tmp_path}"]
    cfg = compose_sweep_config([*common, "study.layers=[0]"])
    half = arm_config(cfg.run_config(), Arm("block", 0, 1), tmp_path.resolve(), 4)
    half.trainer.iterations, half.eval.episodes = 1, 0
    # A sweep writes sweep.yaml before its first arm (a folder with files but none is refused).
    (tmp_path / "sweep.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    train(half)
    run_sweep(cfg)
    for name in ("base-seed0", "full-seed0", "block00-seed0"):
        assert (tmp_path / name / "eval.json").exists()
    assert not (tmp_path / "block01-seed0" / "eval.json").exists()

    calls = []

    def spy(arm_cfg):
        calls.append(Path(arm_cfg.trainer.output_dir).name)
        return train(arm_cfg)

    run_sweep(compose_sweep_config([*common, "study.layers=[0,1,2]"]), train_fn=spy)
    assert calls == ["block01-seed0", "block02-seed0"]
    arm = tmp_path / "block01-seed0"
    metrics = [json.loads(x) for x in (arm / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    assert sorted(p.name for p in (arm / "checkpoints").iterdir()) == ["iter_000002"]  # older ones pruned
    optimizer = torch.load(arm / "checkpoints" / "iter_000002" / "optimizer.pt", weights_only=False)
    assert all(int(s["step"]) == 2 for s in optimizer["state"].values())  # continued, not restarted

    assert main(["sweep", *common, "study.layers=[0,1,2]"]) == 0  # all finished: only the analysis
    for name in ("contribution.csv", "contribution.md", "contribution.png", "summary.json", "sweep.yaml"):
        assert (tmp_path / name).stat().st_size > 0, name
    lines = (tmp_path / "contribution.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["block", "base", "full", "0", "1", "2"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_blocks"] == 4 and summary["metric"] == "success"
    assert ("not clearly above zero" in summary["verdict"]) == summary["degenerate"]

    # The finished sweep feeds the weight-change table and the top-K ensemble.
    rows, _, _ = weight_change(tmp_path / "block01-seed0")
    assert [r["block"] for r in rows if r["trained_tensors"]] == [1]
    assert all(r["relative_change"] == 0 for r in rows if r["block"] != 1)  # (the tiny model may win
    # nothing, so that all advantages and updates are zero; test_weights checks a real change)
    result = evaluate_ensemble(tmp_path, 2)
    assert result["episodes"] == 2 and len(result["members"]) == 2
    assert json.loads((tmp_path / "ensemble-top2.json").read_text())["members"] == result["members"]


def test_ray_executor_without_ray_says_how_to_get_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    cfg = compose_sweep_config([*FAST, "study.executor=ray", f"study.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="study.executor=ray needs the ray package"):
        run_sweep(cfg)


def ray_jobs(tmp_path, arms, overrides=FAST):
    """The (name, run config) jobs and the status table that ``_submit_and_wait`` takes."""
    from lamina.study.executors import ArmState, SweepStatus

    shared = compose_sweep_config(overrides).run_config()
    jobs = [(a.name(4), arm_config(shared, a, tmp_path, 4)) for a in arms]
    return jobs, SweepStatus([ArmState(a, a.name(4)) for a in arms], "success")


def test_ray_arms_reserve_their_memory_and_an_arm_larger_than_the_cluster_is_refused(tmp_path):
    from fake_ray import FakeRay

    from lamina.study.executors import GIB, _submit_and_wait, check_memory_fits

    jobs, status = ray_jobs(tmp_path, [Arm("base", 0), Arm("full", 0), Arm("block", 0, 1)])
    ray = FakeRay()
    _submit_and_wait(ray, jobs, status, 0.0, 1.0, {"full-seed0": 14.0, "block01-seed0": 0.5})
    assert ray.memory == {"full-seed0": 14 * GIB, "block01-seed0": GIB // 2}  # base: no reservation
    assert [s.status for s in status.states.values()] == ["done"] * 3
    check_memory_fits({"full-seed0": 14.0}, 14 * GIB, ["base-seed0", "full-seed0"])
    with pytest.raises(ConfigError, match=r"^study.memory_per_arm gives arm full-seed0 14 GiB, but the Ray "
                       r"cluster has 13.5 GiB of memory for tasks; give at most that, or none$"):  # fmt: skip
        check_memory_fits({"full-seed0": 14.0}, 13.5 * GIB, ["base-seed0", "full-seed0"])


def test_ray_arms_are_submitted_as_they_fit_and_smaller_arms_go_ahead_of_a_larger_one(tmp_path):
    """2 CPUs and 22 GiB, as on the CPU machine the tw_hard demonstration ran on: a 14 GiB arm
    queued behind blocks of 9 GiB waits until it fits, and the blocks after it run two at a time."""
    from fake_ray import FakeRay

    from lamina.study.executors import GIB, _submit_and_wait

    arms = [Arm("block", 0, b) for b in (0, 1, 2)] + [Arm("full", 0), Arm("block", 0, 3)]
    jobs, status = ray_jobs(tmp_path, arms)
    ray = FakeRay(resources={"CPU": 2.0, "memory": 22 * GIB})
    memory = {name: 14.0 if name.startswith("full") else 9.0 for name, _ in jobs}
    _submit_and_wait(ray, jobs, status, 0.0, 1.0, memory)
    assert ray.submissions == [
        ["block00-seed0"],
        ["block00-seed0", "block01-seed0"],
        ["block01-seed0", "block02-seed0"],  # block 0 done: block 2 takes its core
        ["block02-seed0", "block03-seed0"],  # block 1 done: full (14 GiB) does not fit beside 9
        ["full-seed0"],  # alone, once nothing else runs
    ]
    assert [s.status for s in status.states.values()] == ["done"] * 5


class _Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise _Interrupted


@pytest.mark.slow
def test_queued_large_arms_do_not_hold_back_smaller_ones_on_a_real_ray(tmp_path):
    """The sweep's own admission against a local Ray with 2 CPUs: while a long arm runs, the small
    arms queued around two large ones take the free core. Given them all at once, Ray 2.60 kept
    the small ones waiting until the long arm was done (block 2 started at 8.0 s, not 1.1 s)."""
    import ray

    from lamina.study.executors import GIB, _submit_and_wait

    def sleeper(cfg, cpus):  # a closure, so Ray ships it by value to its workers
        out = Path(cfg.trainer.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        begin = time.time()
        time.sleep(8.0 if out.name == "block00-seed0" else 1.0)
        (out / "times.json").write_text(json.dumps([begin, time.time()]))
        return time.time() - begin

    jobs, status = ray_jobs(tmp_path, [Arm("block", 0, b) for b in (0, 1, 2, 3, 10, 4, 11, 5)])
    large = {"block10-seed0", "block11-seed0"}
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=GIB // 4,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        share = ray.cluster_resources()["memory"] / GIB
        memory = {name: share * (0.6 if name in large else 0.45) for name, _ in jobs}
        _submit_and_wait(ray, jobs, status, 0.0, 1.0, memory, fn=sleeper)
        # A signal reaches the sweep while an arm runs, not when the arm ends (Ctrl-C, `kill -INT`).
        previous = signal.signal(signal.SIGUSR1, _raise_interrupt)
        timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGUSR1))
        begin, timer.daemon = time.time(), True
        timer.start()
        try:
            with pytest.raises(_Interrupted):
                _submit_and_wait(
                    ray, *ray_jobs(tmp_path / "long", [Arm("block", 0, 0)]), 0.0, 1.0, fn=sleeper
                )
        finally:
            timer.cancel()
            signal.signal(signal.SIGUSR1, previous)
        assert time.time() - begin < 6.0  # the arm would sleep 8 s
    finally:
        ray.shutdown()
    times = {name: json.loads((tmp_path / name / "times.json").read_text()) for name, _ in jobs}
    long_end = times["block00-seed0"][1]
    for small in ("block02-seed0", "block03-seed0", "block04-seed0", "block05-seed0"):
        assert times[small][0] < long_end, small  # beside the long arm, on the free core
    for name in large:
        assert times[name][0] >= long_end  # 0.6 + 0.45 of the memory: never beside it


@pytest.mark.slow
def test_ray_executor_runs_two_tiny_arms_in_parallel(tmp_path):
    from lamina.study.executors import run_ray

    arms = [Arm("base", 0), Arm("block", 0, 3)]
    jobs, status = ray_jobs(tmp_path, arms, [*FAST, "trainer.iterations=1"])
    begin = time.perf_counter()
    # Both fit in memory together (0.25 GiB each), so Ray's memory resource leaves them parallel.
    run_ray(jobs, status, None, None, 1, {name: 0.25 for name, _ in jobs})
    wall = time.perf_counter() - begin
    assert [s.status for s in status.states.values()] == ["done", "done"]
    assert all(0 < s.seconds < wall for s in status.states.values())  # each arm's own run time
    for name in ("base-seed0", "block03-seed0"):
        assert json.loads((tmp_path / name / "eval.json").read_text())["episodes"] == 2
    assert (tmp_path / "block03-seed0" / "checkpoints" / "iter_000001" / "trainable.safetensors").exists()


def test_the_memory_check_uses_the_largest_live_node_not_the_cluster_total():
    from lamina.study.executors import GIB, largest_node_memory

    nodes = [
        {"Alive": True, "Resources": {"memory": 10 * GIB}},
        {"Alive": True, "Resources": {"memory": 12 * GIB}},
        {"Alive": False, "Resources": {"memory": 64 * GIB}},
    ]
    assert largest_node_memory(type("Ray", (), {"nodes": staticmethod(lambda: nodes)})) == 12 * GIB
