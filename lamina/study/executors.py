"""Running a sweep's arms: one after another in this process, or in parallel through Ray.

Both executors take the arms' run configs and report every change of an arm's state to a
``SweepStatus``, which prints the table of arms. An arm that fails is recorded (its traceback in
``<arm>/error.txt``) and the others go on; rerunning the sweep retries it. A full disk is not one
arm's failure: it stops the whole sweep at once (``DiskFull``, one line), since every later arm
would meet it too; the finished arms stay, and rerunning once space is free resumes the arm.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lamina.errors import ConfigError, DiskFull, StoppedBySignal
from lamina.study.arms import Arm
from lamina.trainer.config import RunConfig

GIB = 2**30
LOCAL_OBJECT_STORE = GIB  # a local Ray's object store: arms return their run time, nothing more
WAIT_STEP_S = 1.0  # seconds per ray.wait: signals are handled between steps


@dataclass
class ArmState:
    """What the table shows for one arm."""

    arm: Arm
    name: str
    status: str = "pending"  # pending, queued (for room on Ray), running, done, failed, finished before
    score: float | None = None
    seconds: float | None = None
    error: str = ""
    started: float = field(default=0.0, repr=False)


class SweepStatus:
    """The table of arms, printed whenever an arm starts, finishes or fails."""

    def __init__(self, states: list[ArmState], metric: str, console: Console | None = None):
        self.states = {s.name: s for s in states}
        self.metric = metric
        self.console = console or Console()

    def _read_score(self, state: ArmState, run_dir: Path) -> None:
        path = run_dir / "eval.json"
        if path.exists():
            result = json.loads(path.read_text())
            state.score = result["success_rate" if self.metric == "success" else "mean_return"]

    def start(self, name: str, status: str = "running", show: bool = True) -> None:
        """Marks an arm started (``queued`` while it waits for room on the Ray cluster)."""
        state = self.states[name]
        state.status, state.started = status, time.perf_counter()
        if show:
            self.show()

    def finish(self, name: str, run_dir: Path, error: str = "", seconds: float | None = None) -> None:
        """Marks an arm done or failed; ``seconds`` is its own run time when known (a Ray arm may
        wait for resources after submission), else the time since ``start``."""
        state = self.states[name]
        if seconds is None and state.started:
            seconds = time.perf_counter() - state.started
        state.seconds = seconds
        state.status, state.error = ("failed", error) if error else ("done", "")
        if not error:
            (run_dir / "error.txt").unlink(missing_ok=True)  # left by an earlier failed try
        self._read_score(state, run_dir)
        self.show()

    def already_finished(self, name: str, run_dir: Path) -> None:
        state = self.states[name]
        state.status = "finished before"
        self._read_score(state, run_dir)

    def table(self) -> Table:
        done = sum(s.status in ("done", "finished before") for s in self.states.values())
        table = Table(title=f"sweep: {done}/{len(self.states)} arms finished", title_justify="left")
        for column in ("arm", "seed", "status", "S" if self.metric == "success" else "return", "minutes"):
            table.add_column(column)
        for s in self.states.values():
            table.add_row(
                s.arm.label,
                str(s.arm.seed),
                s.status + (f": {s.error}" if s.error else ""),
                "" if s.score is None else f"{s.score:.3f}",
                "" if s.seconds is None else f"{s.seconds / 60:.1f}",
            )
        return table

    def show(self) -> None:
        self.console.print(self.table())

    @property
    def failed(self) -> list[ArmState]:
        return [s for s in self.states.values() if s.status == "failed"]


def _record_failure(run_dir: Path, err: BaseException) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(err)))
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def _disk_full_stop(name: str, run_dir: Path, err: BaseException) -> DiskFull | None:
    """The sweep's one-line stop when ``err`` is a full disk (the arm's own ``DiskFull`` or a raw
    ENOSPC/quota error), naming the arm's folder and the space a checkpoint takes; else None."""
    from lamina.trainer.checkpoint import disk_full, is_disk_full  # torch: only once an arm failed

    if not isinstance(err, DiskFull) and not is_disk_full(err):
        return None
    if not isinstance(err, DiskFull):
        filename = getattr(err, "filename", None)
        err = disk_full(f"writing {filename}" if filename else "writing the arm's files", run_dir)
    text = str(err).removesuffix("; free space there, then continue with trainer.resume=true")
    return DiskFull(
        f"sweep arm {name}: {text}; free space there, then run the same lamina sweep again "
        "(the finished arms are kept; this one resumes from its last good checkpoint)"
    )


def run_serial(
    jobs: list[tuple[str, RunConfig]], status: SweepStatus, train_fn: Callable[[RunConfig], Path]
) -> None:
    """Runs the arms one after another in this process."""
    for name, cfg in jobs:
        status.start(name)
        run_dir = Path(cfg.trainer.output_dir)
        try:
            train_fn(cfg)
        except StoppedBySignal:
            raise  # the user stopped the sweep; this arm resumes from its checkpoint next time
        except Exception as err:  # one failed arm must not stop the others; the table names it
            full = _disk_full_stop(name, run_dir, err)
            if full is not None:
                raise full from None  # nothing more is written: no error.txt, no next arm
            status.finish(name, run_dir, _record_failure(run_dir, err))
        else:
            status.finish(name, run_dir)


def _train_arm(cfg: RunConfig, cpus: float = 1.0) -> float:
    """Ray task body (module level, so workers import it rather than unpickle a closure); returns
    the arm's own run time in seconds. Torch gets the arm's CPUs as threads: arms that each took
    every core would slow one another down far more than they gain."""
    import torch

    from lamina.backend import train

    torch.set_num_threads(max(1, int(cpus)))
    begin = time.perf_counter()
    train(cfg)
    return time.perf_counter() - begin


def ray_resources(ray, gpus_per_arm: float | None) -> float:
    """GPUs per arm: as configured, else 1 when the cluster has a GPU and 0 otherwise."""
    if gpus_per_arm is not None:
        return float(gpus_per_arm)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def run_ray(
    jobs: list[tuple[str, RunConfig]],
    status: SweepStatus,
    address: str | None,
    gpus_per_arm: float | None,
    cpus_per_arm: float,
    memory_gib: dict[str, float] | None = None,
) -> None:
    """Runs the arms as Ray tasks (a local Ray, or the cluster at ``address``), as many at once as
    the cluster's CPUs/GPUs allow; with GPUs each arm gets its own (Ray sets CUDA_VISIBLE_DEVICES,
    so the arm's ``trainer.device=auto`` or ``cuda`` is that GPU).

    ``memory_gib`` (by arm name, ``study.memory_per_arm``) is reserved with Ray's ``memory``
    resource, so arms whose peaks would not fit in the node's memory together run one after the
    other. A local Ray started here keeps a small object store (arms return one number), leaving
    the rest of the available memory to that resource; Ray's default store takes 30% of it.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "study.executor=ray needs the ray package (pip install 'ray[default]'); "
            "or use study.executor=serial"
        ) from None
    started_here = not ray.is_initialized()
    local = address is None and started_here  # "local": a new Ray here, not a `ray start` one found
    ray.init(
        address="local" if local else address,
        object_store_memory=LOCAL_OBJECT_STORE if local else None,
        ignore_reinit_error=True,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        memory = memory_gib or {}
        check_memory_fits(memory, largest_node_memory(ray), [name for name, _ in jobs])
        _submit_and_wait(ray, jobs, status, ray_resources(ray, gpus_per_arm), cpus_per_arm, memory)
    finally:
        if started_here:
            ray.shutdown()  # disconnects from a cluster; stops a local Ray this call started


def largest_node_memory(ray) -> float:
    """Bytes of Ray's ``memory`` resource on the largest live node: an arm runs on one node, so a
    request above it never starts, however much the cluster has in all."""
    return max((n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)


def check_memory_fits(memory_gib: dict[str, float], cluster_bytes: float, names: list[str]) -> None:
    """Raises ``ConfigError`` when an arm asks for more memory than a Ray node has (Ray would
    otherwise wait for it forever)."""
    for name in names:
        need = memory_gib.get(name, 0.0)
        if need * GIB > cluster_bytes:
            raise ConfigError(
                f"study.memory_per_arm gives arm {name} {need:g} GiB, but the Ray cluster has "
                f"{cluster_bytes / GIB:.1f} GiB of memory for tasks; give at most that, or none"
            )


def cluster_totals(ray) -> dict[str, float]:
    """The CPUs, GPUs and bytes of ``memory`` of the live Ray cluster, the budget arms are
    admitted against."""
    total = ray.cluster_resources()
    return {key: float(total.get(key, 0.0)) for key in ("CPU", "GPU", "memory")}


def _fits(need: dict[str, float], used: dict[str, float], totals: dict[str, float]) -> bool:
    return all(used.get(k, 0.0) + v <= totals.get(k, 0.0) * (1 + 1e-9) for k, v in need.items() if v > 0)


def _wait_one(ray, refs: list):
    """The first of ``refs`` to finish. Waits in steps, so that a signal to this process (Ctrl-C,
    ``kill -INT``) stops the sweep while arms run, with what its handler raised: Ray's wait wraps
    that in a ``SystemError``."""
    while True:
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=WAIT_STEP_S)
        except SystemError as err:
            if err.__cause__ is None:
                raise
            raise err.__cause__ from None
        if ready:
            return ready[0]


def _submit_and_wait(
    ray,
    jobs: list[tuple[str, RunConfig]],
    status: SweepStatus,
    gpus: float,
    cpus: float,
    memory_gib: dict[str, float] | None = None,
    fn: Callable[[RunConfig, float], float] | None = None,
) -> None:
    """Submits the arms to Ray, in order, as the cluster's free CPUs, GPUs and memory allow, and
    waits for them. An arm is handed to Ray only once the arms already running leave room for it,
    and a later arm that fits goes ahead of an earlier one that does not (backfill). Ray would
    not do that itself: measured with Ray 2.60, one queued task with a larger ``memory`` request
    than is free held back every smaller task queued beside it, leaving a core idle for a whole
    arm. ``fn`` stands in for ``_train_arm`` (tests)."""
    task = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=0)(fn or _train_arm)
    queue = []
    for name, cfg in jobs:
        if gpus > 0 and str(cfg.trainer.device).startswith("cuda"):
            cfg.trainer.device = "cuda"  # the one GPU Ray gives this worker, whatever its global index
        need = {"CPU": cpus, "GPU": gpus, "memory": (memory_gib or {}).get(name, 0.0) * GIB}
        queue.append((name, cfg, need))
        status.start(name, "queued", show=False)
    pending: dict = {}

    def admit() -> None:
        totals = cluster_totals(ray)  # read again each time: a cluster may have grown or shrunk
        for item in list(queue):
            name, cfg, need = item
            used = {k: sum(running[k] for *_, running in pending.values()) for k in need}
            if pending and not _fits(need, used, totals):
                continue  # with nothing running it goes anyway: Ray waits for (or scales up to) it
            submit = task.options(memory=int(need["memory"])) if need["memory"] > 0 else task
            pending[submit.remote(cfg, cpus)] = (name, Path(cfg.trainer.output_dir), need)
            queue.remove(item)
            status.start(name, "running", show=False)

    admit()
    status.show()
    while pending:
        ref = _wait_one(ray, list(pending))
        name, run_dir, _ = pending.pop(ref)
        error, seconds = "", None
        try:
            seconds = ray.get(ref)
        except Exception as err:  # a RayTaskError wraps the arm's own exception
            cause = getattr(err, "cause", None) or err
            full = _disk_full_stop(name, run_dir, cause)
            if full is not None:
                for other in pending:  # started arms stop like killed runs: they resume next time
                    with contextlib.suppress(Exception):
                        ray.cancel(other, force=True)
                raise full from None
            error = _record_failure(run_dir, cause)
        admit()
        status.finish(name, run_dir, error, seconds=seconds)
