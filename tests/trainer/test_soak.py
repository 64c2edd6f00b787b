"""The soak: a long run meets every fault at once and still ends where an uninterrupted run ends.

``lamina train`` on the tiny model with environment workers on (test_exact's settings: the weights
really move and every generator is in play) runs ``ITERATIONS`` iterations twice, through
``soak_faults.py``, which adds faults at fixed iterations that both runs meet alike:

- every 12th iteration from 1 on: the task's first step SIGKILLs its environment worker processes
  (2 workers restarted, the episodes cut);
- every 12th from 5 on: the environments raise in their first step (3 copies replaced);
- every 12th from 9 on: one advantage is NaN, so some PPO steps are skipped.

The reference runs uninterrupted. The soak run is SIGKILLed ``KILLS`` times, each at a point fixed
by iteration, not by time: once a metrics row appears, once a checkpoint's staging folder appears
(the test's slow-save hook holds each write open 0.3 s), or once a checkpoint is complete (the kill
lands in the next iteration's rollout or update, where worker kills and raising environments may
be redone). Each restart is ``trainer.resume=true`` and takes over the dead run's folder lock.
At the end the trained tensors, the optimizer state and every metrics row equal the reference's.

Timings and memory (``rollout_s``, ``update_s``, ``rss_mb``, ``max_rss_mb``, ``peak_memory_mb``)
differ run to run and are not compared. ``env_worker_restarts`` is the trainer process's running
count, which a resumed process starts again from 0: its per-iteration increments are compared.

The size is set for about 11 minutes on an otherwise idle 2-core machine (one torch thread; the
CPU time per phase is printed): the reference and the soak run each cost about ITERATIONS
iterations, and each kill adds a process start and a redone part of an iteration.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from soak_faults import ENV_ID
from test_exact import EXACT
from test_reliability import TIMING, _final_tensors

from lamina.cli import compose_config
from lamina.envs.seeds import task_seeds
from lamina.trainer.checkpoint import latest_checkpoint

ITERATIONS = 330
KILLS = 33
KINDS = ("row", "staging", "checkpoint")  # where each SIGKILL lands, in turn
WORKER_KILL, ENV_RAISE, NAN = 1, 5, 9  # fault iterations: these modulo 12
WORKERS, COPIES = 2, 3  # rollout.env_workers; rollout.group_size (EXACT) copies of each task
RUN = [
    *EXACT,
    f"env.name={ENV_ID}",
    f"rollout.env_workers={WORKERS}",
    "trainer.save_every=1",
    "trainer.keep_checkpoints=2",  # pruning runs under the kills too
    "logging.tensorboard=false",
    "logging.curves=false",
]
SCRIPT = Path(__file__).with_name("soak_faults.py")
WAIT_S = 1800  # for any one kill point: only a hung run reaches it


def _command(run: Path) -> list[str]:
    args = [f"trainer.output_dir={run}", f"trainer.iterations={ITERATIONS}", "trainer.resume=true"]
    return [sys.executable, str(SCRIPT), "train", *RUN, *args]


def _fault_environment() -> dict[str, str]:
    """The faults for soak_faults.py: task seeds of the worker-kill and raising iterations, NaN
    iterations."""
    cfg = compose_config(RUN[: len(EXACT)])  # the seeds depend on the env group and trainer.seed
    seeds = [task_seeds(cfg.env, cfg.trainer.seed, i, cfg.rollout.batch_size)[0] for i in range(ITERATIONS)]
    assert cfg.rollout.batch_size == 1 and cfg.rollout.group_size == COPIES

    def joined(residue: int, values: list[int]) -> str:
        return ",".join(str(values[i]) for i in range(residue, ITERATIONS, 12))

    return {
        "LAMINA_SOAK_KILL": joined(WORKER_KILL, seeds),
        "LAMINA_SOAK_RAISE": joined(ENV_RAISE, seeds),
        "LAMINA_SOAK_NAN": joined(NAN, list(range(ITERATIONS))),
        "OMP_NUM_THREADS": "1",  # one torch thread: the same work on a busy machine or an idle one
    }


def _rows(run: Path) -> list[dict]:
    text = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _comparable(rows: list[dict]) -> list[str]:
    """Rows without timings, memory and the restart count, as JSON text: NaN (a skipped step's
    loss) then equals NaN."""
    skip = TIMING | {"env_worker_restarts", "peak_memory_mb"}
    return [json.dumps({k: v for k, v in r.items() if k not in skip}, sort_keys=True) for r in rows]


def _restarts_per_iteration(rows: list[dict], starts: list[int]) -> list[int]:
    """Each iteration's own environment restarts, from the running count of the process that wrote
    its row: the last one started (resumed from iteration s) with s <= the row's iteration."""
    own = []
    for r in rows:
        i = r["iteration"]
        same_process = i > 0 and [s for s in starts if s <= i][-1] <= i - 1
        own.append(r["env_worker_restarts"] - (rows[i - 1]["env_worker_restarts"] if same_process else 0))
    return own


def _done(run: Path) -> int:
    """Iterations done by the newest complete checkpoint folder (0: none)."""
    root = run / "checkpoints"
    names = [p.name for p in root.iterdir() if p.name.startswith("iter_")] if root.exists() else []
    return max((int(n.removeprefix("iter_")) for n in names), default=0)


def _saving(run: Path) -> int:
    """The iterations done of the checkpoint being written now (0: none)."""
    root = run / "checkpoints"
    staging = [p.name for p in root.glob(".iter_*.partial")] if root.exists() else []
    return max((int(n.removeprefix(".iter_").removesuffix(".partial")) for n in staging), default=0)


def _reached(run: Path, kind: str, iteration: int) -> bool:
    if kind == "row":
        return any(r["iteration"] >= iteration for r in _rows(run))
    if kind == "staging":
        return _saving(run) >= iteration + 1
    return _done(run) >= iteration


def _kill_plan() -> list[tuple[str, int]]:
    """KILLS points spread evenly over the run, at least 2 iterations apart (so each restarted
    process has work left before its point)."""
    step = ITERATIONS / (KILLS + 1)
    assert step >= 3
    return [(KINDS[j % len(KINDS)], round((j + 1) * step)) for j in range(KILLS)]


def _optimizer_state(run: Path) -> dict:
    path = run / "checkpoints" / f"iter_{ITERATIONS:06d}" / "optimizer.pt"
    return torch.load(path, weights_only=True)


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow
def test_soak_of_kills_worker_kills_raising_envs_and_nan_steps_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, **_fault_environment()}
    began, cpu0 = time.monotonic(), _cpu_s()
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), env=env, check=True, capture_output=True)
    reference_s, reference_cpu = time.monotonic() - began, _cpu_s() - cpu0
    rows = _rows(reference)
    assert [r["iteration"] for r in rows] == list(range(ITERATIONS))

    # The faults happened where planned, and the run went on through each.
    restarts = _restarts_per_iteration(rows, [0])
    expected = [
        WORKERS if i % 12 == WORKER_KILL else COPIES if i % 12 == ENV_RAISE else 0 for i in range(ITERATIONS)
    ]
    assert restarts == expected
    skipped = [i for i, r in enumerate(rows) if r["skipped_steps"] > 0]
    assert skipped == list(range(NAN, ITERATIONS, 12))
    initial = load_file(str(reference / "checkpoints" / f"iter_{ITERATIONS:06d}" / "reference.safetensors"))
    trained = _final_tensors(reference, ITERATIONS)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)  # training moved the weights

    run = tmp_path / "soak"
    slow_save = {**env, "LAMINA_TEST_SLOW_SAVE_S": "0.3"}
    starts, stale_takeovers, raises, inside_save = [], 0, 0, 0
    for launch, (kind, iteration) in enumerate([*_kill_plan(), ("end", ITERATIONS)]):
        good = latest_checkpoint(run) if run.exists() else None
        starts.append(int(good.name.removeprefix("iter_")) if good else 0)
        assert starts[-1] < iteration or kind == "end"
        log = tmp_path / f"launch{launch:02d}.err"
        with log.open("w") as err:
            proc = subprocess.Popen(_command(run), env=slow_save, stdout=subprocess.DEVNULL, stderr=err)
            if kind == "end":
                assert proc.wait(timeout=WAIT_S) == 0, log.read_text()[-3000:]
            else:
                deadline = time.monotonic() + WAIT_S
                while not _reached(run, kind, iteration):
                    assert proc.poll() is None, (
                        f"launch {launch} ended before its kill point:\n{log.read_text()[-3000:]}"
                    )
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                proc.kill()
                proc.wait()
                inside_save += kind == "staging" and _saving(run) > 0  # a half-written checkpoint left
        text = log.read_text()
        stale_takeovers += "taking over the lock left by" in text
        raises += text.count("raised in step() and was restarted")
    soak_s, soak_cpu = time.monotonic() - began - reference_s, _cpu_s() - cpu0 - reference_cpu

    soak = _rows(run)
    assert _comparable(soak) == _comparable(rows)
    assert _restarts_per_iteration(soak, starts) == restarts
    got = _final_tensors(run, ITERATIONS)
    assert got.keys() == trained.keys() and all(torch.equal(got[k], trained[k]) for k in trained)
    assert _same_state(_optimizer_state(run), _optimizer_state(reference))
    assert len(starts) == KILLS + 1 and stale_takeovers == KILLS  # every restart found a dead run's lock
    assert inside_save >= KILLS // len(KINDS) // 2  # most staging kills landed inside the write
    faults = {
        name: len(range(first, ITERATIONS, 12))
        for name, first in (("worker kill", WORKER_KILL), ("raise", ENV_RAISE), ("NaN", NAN))
    }
    print(
        f"\nsoak: {ITERATIONS} iterations, {KILLS} SIGKILLs ({inside_save} inside a checkpoint write), "
        f"fault iterations {faults}, {raises} env raises in the soak run (redone iterations included); "
        f"reference {reference_s:.0f} s wall / {reference_cpu:.0f} s CPU, "
        f"soak {soak_s:.0f} s wall / {soak_cpu:.0f} s CPU; restarts from {starts}"
    )
