"""Step B x G text environments in parallel worker processes, surviving worker crashes and hangs.

    from lamina.envs.runner import EnvGroupRunner
    with EnvGroupRunner("sokoban", num_envs=8, num_workers=2) as runner:
        observations, infos = runner.reset([0, 0, 0, 0, 1, 1, 1, 1])     # 2 groups of 4 copies
        observations, rewards, terminated, truncated, infos = runner.step(actions)

Each worker process holds a contiguous slice of the environments (made with
``lamina.envs.make`` inside the worker) and steps them one after the other; the parent sends every
worker its part of a batch, then collects the answers, so workers run concurrently. Workers are
started with the ``spawn`` context: never ``fork``, because the parent may hold torch (threads,
CUDA) that a forked child would inherit in a broken state. This module and the environments import
no torch, so workers stay light.

A worker that dies (killed, segfault) or does not answer within ``step_timeout_s`` (an
environment step that hangs) is killed and restarted with fresh environments. The episodes it was
playing end with ``truncated=True``, ``info["worker_restarted"] = True`` and an observation saying
the episode was cut; the next ``reset`` works normally and ``restarts`` counts the restarts.
An environment whose ``step`` raises is replaced by a fresh copy the same way, in both modes: its
episode alone ends with ``truncated=True``, ``info["env_restarted"] = True`` and
``info["env_error"]`` (the exception and its traceback), and ``restarts`` counts it too. Training
goes on. (A ``reset`` that raises is the caller's error and raises ``EnvWorkerError``.)

Every command carries a sequence number that its reply repeats, so a call interrupted midway
(Ctrl-C, an exception) leaves no stale reply for the next call to mistake for its own. Expert
planning (``expert_actions``) has a time limit per environment, ``expert_timeout_s``: an expert that
takes longer gives None for its environment. Workers exit within about a second when the parent
process dies, however it dies.

Note: like any ``spawn`` child, a worker imports the parent's ``__main__`` module (not under
``if __name__ == "__main__"``); keep heavy imports in a script's functions or under that guard.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

import gymnasium as gym

from lamina.envs.registry import make, resolve_env_id

log = logging.getLogger(__name__)

# Seconds a worker gets to build its environments (ALFWorld scans its games, WebShop builds a
# BM25 index) before it counts as hung; generous because other processes may share the cores.
STARTUP_TIMEOUT_S = 600.0
# Seconds close() waits for a worker to exit on its own before killing it.
CLOSE_GRACE_S = 5.0
# Resets retried on a fresh worker after its predecessor died during the reset.
RESET_RETRIES = 2
# Seconds between a worker's checks that its parent process is still alive.
PARENT_POLL_S = 0.5


class EnvConstructionError(RuntimeError):
    """An environment could not be created (bad kwargs, missing data); names the env and the cause."""


class EnvWorkerError(RuntimeError):
    """An environment raised inside ``reset``; carries the worker's traceback."""


@dataclass(frozen=True)
class EnvFault:
    """What an environment's ``step`` raised (the environment has been replaced by a fresh copy)."""

    message: str
    traceback: str


class _ExpertTimeout(Exception):
    """Raised by SIGALRM inside a worker when one environment's expert takes too long."""


def _on_expert_alarm(signum: int, frame: Any) -> None:
    raise _ExpertTimeout


# ---------------------------------------------------------------------------------------------
# The environments one worker holds, used by the worker process and by the in-process mode alike.
# ---------------------------------------------------------------------------------------------


class _EnvSlice:
    """A list of environments and the three operations the runner asks of them.

    Args:
        env_name: a registered lamina environment (short name or id).
        count: how many copies to make.
        env_kwargs: keyword arguments of the environment's constructor.
        max_episode_steps: Gymnasium's time limit; None keeps the registration's.
    """

    def __init__(self, env_name: str, count: int, env_kwargs: dict[str, Any], max_episode_steps: int | None):
        self._make_args = (env_name, env_kwargs, max_episode_steps)
        self.envs = [self._make() for _ in range(count)]

    def _make(self) -> gym.Env:
        env_name, env_kwargs, max_episode_steps = self._make_args
        return make(env_name, max_episode_steps=max_episode_steps, **env_kwargs)

    def reset(self, requests: list[tuple[int, int | None, dict[str, Any] | None]]) -> list[tuple[str, dict]]:
        """``(local index, seed, options)`` per environment to reset -> ``(observation, info)`` each."""
        return [self.envs[i].reset(seed=seed, options=options) for i, seed, options in requests]

    def step(self, requests: list[tuple[int, str]]) -> list[tuple[str, float, bool, bool, dict] | EnvFault]:
        """``(local index, action)`` per environment to step -> Gymnasium's 5-tuple each.

        An environment that raises is replaced by a fresh copy and gives an ``EnvFault``.
        """
        results: list[tuple[str, float, bool, bool, dict] | EnvFault] = []
        for i, action in requests:
            try:
                observation, reward, terminated, truncated, info = self.envs[i].step(action)
                results.append((observation, float(reward), bool(terminated), bool(truncated), info))
            except Exception as error:
                results.append(EnvFault(f"{type(error).__name__}: {error}", traceback.format_exc()))
                self._replace(i)
        return results

    def _replace(self, i: int) -> None:
        try:
            self.envs[i].close()
        except Exception:  # a broken environment may fail to close too; it is dropped anyway
            pass
        self.envs[i] = self._make()

    def expert_actions(self, time_limit_s: float | None = None) -> list[str | None]:
        """Each environment's ``expert_action()``; None where it has none, raises or times out.

        ``time_limit_s`` (per environment) needs SIGALRM, so it applies only in a worker process.
        """
        actions: list[str | None] = []
        for env in self.envs:
            expert = getattr(env.unwrapped, "expert_action", None)
            if not callable(expert):
                actions.append(None)
                continue
            if time_limit_s:
                signal.setitimer(signal.ITIMER_REAL, time_limit_s)
            try:
                actions.append(expert())
            except _ExpertTimeout:
                actions.append(None)
            finally:
                if time_limit_s:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        return actions

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _error_reply(seq: int, error: BaseException) -> tuple[int, str, str, str]:
    return (seq, "error", f"{type(error).__name__}: {error}", traceback.format_exc())


def _exit_with_parent(parent_pid: int) -> None:
    """Ends this worker as soon as its parent is gone (a SIGKILLed parent runs no cleanup)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="lamina-parent-watch", daemon=True).start()


def _worker_main(
    conn: Connection,
    parent_pid: int,
    env_id: str,
    spec: dict[str, Any] | None,
    count: int,
    env_kwargs: dict[str, Any],
    max_episode_steps: int | None,
) -> None:
    """The worker process: builds its environments, then answers commands until ``close`` or EOF.

    Commands are ``(seq, command, payload)``; replies ``(seq, "ok", payload)`` or ``(seq, "error",
    message, traceback)`` (the ready message has seq 0). An environment that raises does not end the
    worker. ``spec`` (entry point and step limit) registers ``env_id`` here when the parent
    registered it at run time (a test, a notebook), since a spawned process starts afresh.
    """
    # Ctrl-C reaches the whole process group; the parent handles it and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_expert_alarm)
    _exit_with_parent(parent_pid)
    try:
        if spec is not None and env_id not in gym.registry:
            gym.register(id=env_id, **spec)
        envs = _EnvSlice(env_id, count, env_kwargs, max_episode_steps)
    except BaseException as error:  # any constructor failure must reach the parent, not hang it
        conn.send(_error_reply(0, error))
        conn.close()
        return
    conn.send((0, "ok", None))
    while True:
        try:
            seq, command, payload = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if command == "close":
            break
        try:
            if command == "reset":
                reply: tuple = (seq, "ok", envs.reset(payload))
            elif command == "step":
                reply = (seq, "ok", envs.step(payload))
            elif command == "expert":
                reply = (seq, "ok", envs.expert_actions(payload))
            else:
                reply = (seq, "error", f"unknown command {command!r}", "")
        except Exception as error:
            reply = _error_reply(seq, error)
        try:
            conn.send(reply)
        except (EOFError, OSError):  # the parent is gone
            break
        except Exception as error:  # an info value that cannot be pickled: report it, keep serving
            conn.send(_error_reply(seq, error))
    envs.close()
    conn.close()


# ---------------------------------------------------------------------------------------------
# The parent side.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Worker:
    """One worker process (or, with ``num_workers=0``, the in-process slice) and its env indices."""

    env_indices: list[int]
    process: Any = None  # multiprocessing.Process; None in-process
    conn: Connection | None = None
    local: _EnvSlice | None = None  # the in-process slice
    failure: str | None = None  # why the last command got no reply


@dataclass
class _EnvRecord:
    """What the parent remembers of one environment: its last result and whether it needs a reset."""

    observation: str = ""
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    needs_reset: bool = True
    ever_reset: bool = False


class EnvGroupRunner:
    """``num_envs`` environments stepped together, spread over ``num_workers`` worker processes.

    Args:
        env_name: a registered lamina environment, e.g. ``"sokoban"`` or ``"lamina/ALFWorld-v0"``.
        num_envs: number of environments (B tasks x G copies for a GRPO/GiGPO batch).
        num_workers: worker processes; None: ``min(num_envs, cpu count)``; 0: everything runs in this
            process (same interface, no restarts or timeouts; for tests and debugging). Clipped
            to ``num_envs``.
        env_kwargs: keyword arguments of the environment's constructor.
        max_episode_steps: Gymnasium's time limit; None keeps the registration's.
        step_timeout_s: seconds one worker may take to answer one ``reset``/``step`` call (all of
            its environments together) before it counts as hung and is restarted.
        expert_timeout_s: seconds one environment's expert may plan in ``expert_actions`` before
            it gives None (workers only; a worker gets this much per environment it holds).

    Attributes:
        restarts: how many worker restarts happened.

    Raises:
        EnvConstructionError: if the environments cannot be created (the message names the env and
            the constructor's error).
    """

    def __init__(
        self,
        env_name: str,
        num_envs: int,
        *,
        num_workers: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        max_episode_steps: int | None = None,
        step_timeout_s: float = 300.0,
        expert_timeout_s: float = 60.0,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0 (0 runs in-process)")
        if step_timeout_s <= 0:
            raise ValueError(f"step_timeout_s={step_timeout_s} must be > 0")
        if expert_timeout_s <= 0:
            raise ValueError(f"expert_timeout_s={expert_timeout_s} must be > 0")
        # Resolve here so an unknown name fails at once, with the list of valid names.
        self.env_id = resolve_env_id(env_name)
        self.num_envs = num_envs
        self.env_kwargs = dict(env_kwargs or {})
        self.max_episode_steps = max_episode_steps
        self.step_timeout_s = float(step_timeout_s)
        self.expert_timeout_s = float(expert_timeout_s)
        self.restarts = 0
        self._seq = 0  # the last command's sequence number; replies must repeat it
        spec = gym.spec(self.env_id)
        # What a spawned worker needs to register an id the parent registered at run time.
        self._spec = (
            {"entry_point": spec.entry_point, "max_episode_steps": spec.max_episode_steps}
            if isinstance(spec.entry_point, str)
            else None
        )
        self._records = [_EnvRecord() for _ in range(num_envs)]
        self._context = mp.get_context("spawn")
        self._closed = False

        if num_workers is None:
            num_workers = min(num_envs, len(os.sched_getaffinity(0)))
        self.num_workers = min(num_workers, num_envs)
        if self.num_workers == 0:
            self._workers = [_Worker(list(range(num_envs)))]
            self._workers[0].local = self._build_local(num_envs)
            return
        # Contiguous, near-equal slices: the first num_envs % num_workers workers get one more.
        size, extra = divmod(num_envs, self.num_workers)
        bounds = [0]
        for w in range(self.num_workers):
            bounds.append(bounds[-1] + size + (w < extra))
        self._workers = [_Worker(list(range(bounds[w], bounds[w + 1]))) for w in range(self.num_workers)]
        try:
            for worker in self._workers:
                self._spawn(worker)
            for worker in self._workers:
                self._await_ready(worker)
        except BaseException:
            self.close()
            raise

    # -- public API ------------------------------------------------------------------------------
    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty in-process)."""
        return [w.process.pid for w in self._workers if w.process is not None]

    def reset(
        self, seeds: Sequence[int | None], options: Sequence[dict[str, Any] | None] | None = None
    ) -> tuple[list[str], list[dict]]:
        """Resets every environment: ``seeds[i]`` (and ``options[i]``) for environment ``i``.

        A worker that dies or hangs during the reset is restarted and the reset retried on the fresh
        worker (``RESET_RETRIES`` times at most).

        Returns:
            (observations, infos), one per environment.
        """
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} environments")
        if options is not None and len(options) != self.num_envs:
            raise ValueError(f"got {len(options)} options for {self.num_envs} environments")
        todo = list(self._workers)
        for _attempt in range(RESET_RETRIES + 1):
            commands = {
                id(worker): (
                    "reset",
                    [
                        (local, seeds[i], None if options is None else options[i])
                        for local, i in enumerate(worker.env_indices)
                    ],
                )
                for worker in todo
            }
            replies = self._run(commands)
            lost = []
            for worker in todo:
                status, payload = replies[id(worker)][:2]
                if status == "lost":
                    lost.append(worker)
                elif status == "ok":
                    for i, (observation, info) in zip(worker.env_indices, payload, strict=True):
                        self._records[i] = _EnvRecord(
                            observation, info=info, needs_reset=False, ever_reset=True
                        )
            self._restart(lost)
            self._raise_errors(replies)
            if not lost:
                break
            todo = lost
        else:
            reasons = "; ".join(str(w.failure) for w in todo)
            raise RuntimeError(
                f"{self.env_id}: reset failed {RESET_RETRIES + 1} times in a row, on fresh workers: {reasons}"
            )
        return [r.observation for r in self._records], [r.info for r in self._records]

    def step(
        self, actions: Sequence[str | None]
    ) -> tuple[list[str], list[float], list[bool], list[bool], list[dict]]:
        """Steps every environment whose action is not None.

        An environment with action None (done, or skipped) returns its last observation and info,
        reward 0.0 and its previous flags; so does one whose episode was cut by a worker restart,
        until it is reset.

        Returns:
            (observations, rewards, terminated, truncated, infos), one per environment.
        """
        self._check_open()
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} environments")
        rewards = [0.0] * self.num_envs
        commands = {}
        for worker in self._workers:
            requests = []
            for local, i in enumerate(worker.env_indices):
                if actions[i] is None:
                    continue
                if not self._records[i].ever_reset:
                    raise RuntimeError(f"environment {i} was never reset; call reset() before step()")
                if not self._records[i].needs_reset:
                    requests.append((local, actions[i]))
            if requests:
                commands[id(worker)] = ("step", requests)
        replies = self._run(commands)
        lost = []
        for worker in self._workers:
            if id(worker) not in commands:
                continue
            status, payload = replies[id(worker)][:2]
            if status == "lost":
                lost.append(worker)
            elif status == "ok":
                for (local, _action), result in zip(commands[id(worker)][1], payload, strict=True):
                    i = worker.env_indices[local]
                    if isinstance(result, EnvFault):
                        self._cut_env_fault(i, result)
                        continue
                    record = self._records[i]
                    record.observation, rewards[i], record.terminated, record.truncated, record.info = result
        self._restart(lost)
        # Raised only now, so the results of every worker that did answer are kept.
        self._raise_errors(replies)
        records = self._records
        return (
            [r.observation for r in records],
            rewards,
            [r.terminated for r in records],
            [r.truncated for r in records],
            [r.info for r in records],
        )

    def expert_actions(self) -> list[str | None]:
        """Each environment's ``expert_action()``: None where unavailable, over ``expert_timeout_s``,
        or the episode was cut."""
        self._check_open()
        commands = {id(w): ("expert", self.expert_timeout_s) for w in self._workers}
        # A worker plans for each of its environments in turn, each within expert_timeout_s.
        longest = max(len(w.env_indices) for w in self._workers)
        replies = self._run(commands, timeout_s=self.step_timeout_s + self.expert_timeout_s * longest)
        actions: list[str | None] = [None] * self.num_envs
        lost = []
        for worker in self._workers:
            status, payload = replies[id(worker)][:2]
            if status == "lost":
                lost.append(worker)
            elif status == "ok":
                for i, action in zip(worker.env_indices, payload, strict=True):
                    actions[i] = None if self._records[i].needs_reset else action
        self._restart(lost)
        self._raise_errors(replies)
        return actions

    def close(self) -> None:
        """Stops every worker (politely, then by force) and closes in-process environments."""
        if self._closed:
            return
        self._closed = True
        for worker in getattr(self, "_workers", []):
            if worker.local is not None:
                worker.local.close()
            if worker.conn is not None and worker.process is not None and worker.process.is_alive():
                try:
                    worker.conn.send((-1, "close", None))
                except OSError:
                    pass
        deadline = time.monotonic() + CLOSE_GRACE_S
        for worker in getattr(self, "_workers", []):
            if worker.process is not None:
                self._stop(worker, grace_s=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> EnvGroupRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- workers ---------------------------------------------------------------------------------
    def _build_local(self, count: int) -> _EnvSlice:
        try:
            return _EnvSlice(self.env_id, count, self.env_kwargs, self.max_episode_steps)
        except Exception as error:
            raise EnvConstructionError(
                self._construction_message(f"{type(error).__name__}: {error}")
            ) from error

    def _construction_message(self, cause: str) -> str:
        return f"could not create environment {self.env_id!r} with kwargs {self.env_kwargs}: {cause}"

    def _spawn(self, worker: _Worker) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(
                child_conn,
                os.getpid(),
                self.env_id,
                self._spec,
                len(worker.env_indices),
                self.env_kwargs,
                self.max_episode_steps,
            ),
            name=f"lamina-env-worker-{worker.env_indices[0]}",
            daemon=True,  # never outlive the parent, even if close() is never called
        )
        process.start()
        # Drop our copy of the child's end so the child's death shows as EOF on parent_conn.
        child_conn.close()
        worker.process, worker.conn, worker.failure = process, parent_conn, None

    def _await_ready(self, worker: _Worker) -> None:
        """Waits for the worker's first reply; raises EnvConstructionError if it is not ``ok``."""
        assert worker.conn is not None and worker.process is not None
        if not worker.conn.poll(STARTUP_TIMEOUT_S):
            raise EnvConstructionError(self._construction_message(f"no answer in {STARTUP_TIMEOUT_S:.0f} s"))
        try:
            reply = worker.conn.recv()[1:]  # (0, status, ...): the ready message
        except (EOFError, OSError):
            worker.process.join(1.0)
            # Dying before the first reply is mostly the spawn pitfall: the worker re-imports the
            # parent's __main__, which starts a runner at import time.
            raise EnvConstructionError(
                self._construction_message(
                    f"the worker died before it was ready (exit code {worker.process.exitcode}); its "
                    "stderr above says why. A script that starts workers must do so under "
                    "`if __name__ == '__main__':` (workers are spawned and import the main module)."
                )
            ) from None
        if reply[0] != "ok":
            raise EnvConstructionError(
                self._construction_message(f"{reply[1]}\n\nworker traceback:\n{reply[2]}")
            )

    def _stop(self, worker: _Worker, grace_s: float = 0.0) -> None:
        """Ends the worker's process (waiting ``grace_s`` for a clean exit first) and reaps it."""
        process = worker.process
        if process is None:
            return
        process.join(grace_s)
        if process.is_alive():
            process.kill()  # SIGKILL also ends a stopped (SIGSTOP) or hung process
            process.join()
        process.close()
        if worker.conn is not None:
            worker.conn.close()
        worker.process, worker.conn = None, None

    def _restart(self, workers: list[_Worker]) -> None:
        """Replaces dead or hung workers (all started before any is awaited) and cuts their episodes."""
        if not workers:
            return
        reasons = {id(w): w.failure or "failed" for w in workers}
        for worker in workers:
            self._stop(worker)
            self.restarts += 1
            self._spawn(worker)
        for worker in workers:
            self._await_ready(worker)
            for i in worker.env_indices:
                record = self._records[i]
                if record.ever_reset and not (record.terminated or record.truncated):
                    record.observation = (
                        f"[The episode was cut short: the environment's worker process {reasons[id(worker)]} "
                        "and was restarted. Reset to play again.]"
                    )
                    record.truncated = True
                    # action_valid stays True: the agent's action is not at fault, so no penalty.
                    record.info = {**record.info, "action_valid": True, "worker_restarted": True}
                record.needs_reset = True

    def _cut_env_fault(self, i: int, fault: EnvFault) -> None:
        """Ends environment ``i``'s episode after its ``step`` raised (it was replaced already)."""
        self.restarts += 1
        log.warning(
            "%s: environment %d raised in step() and was restarted: %s", self.env_id, i, fault.traceback
        )
        record = self._records[i]
        record.observation = (
            f"[The episode was cut short: the environment raised {fault.message} and was restarted. "
            "Reset to play again.]"
        )
        record.truncated = True
        # action_valid stays True: the agent's action is not known to be at fault, so no penalty.
        record.info = {
            **record.info,
            "action_valid": True,
            "env_restarted": True,
            "env_error": f"{fault.message}\n{fault.traceback}",
        }
        record.needs_reset = True

    def _run(self, commands: dict[int, tuple[str, Any]], timeout_s: float | None = None) -> dict[int, tuple]:
        """Sends each worker (keyed by ``id``) its command and collects one reply per worker.

        Replies: ``("ok", payload)``; ``("lost", reason)`` for a worker that died, hung past
        ``timeout_s`` (default ``step_timeout_s``) or could not be written to (the caller restarts
        it); ``("error", message, traceback)`` for an environment that raised (the worker itself is
        fine). A reply whose sequence number is not this call's (left over from an interrupted
        call) is dropped.
        """
        workers = [w for w in self._workers if id(w) in commands]
        replies: dict[int, tuple] = {}
        if self.num_workers == 0:
            # In-process: environment errors propagate as they are, with their own traceback.
            for worker in workers:
                assert worker.local is not None
                command, payload = commands[id(worker)]
                if command == "reset":
                    replies[id(worker)] = ("ok", worker.local.reset(payload))
                elif command == "step":
                    replies[id(worker)] = ("ok", worker.local.step(payload))
                else:
                    replies[id(worker)] = ("ok", worker.local.expert_actions())
            return replies

        self._seq += 1
        seq = self._seq
        waiting: dict[Connection, _Worker] = {}
        for worker in workers:
            assert worker.conn is not None
            try:
                worker.conn.send((seq, *commands[id(worker)]))
                waiting[worker.conn] = worker
            except OSError:  # BrokenPipeError: it died since the last call
                replies[id(worker)] = self._lost(worker, self._death_reason(worker))
        # Every worker got its command before any answer is awaited: they run concurrently.
        timeout_s = self.step_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while waiting:
            remaining = deadline - time.monotonic()
            # wait() returns some of the objects it was given: here, Connections.
            ready = cast("list[Connection]", wait(list(waiting), timeout=remaining)) if remaining > 0 else []
            if not ready:
                for worker in waiting.values():
                    replies[id(worker)] = self._lost(worker, f"did not answer within {timeout_s:g} s")
                break
            for conn in ready:
                try:
                    reply = conn.recv()
                except (EOFError, OSError):  # died mid-call
                    worker = waiting.pop(conn)
                    replies[id(worker)] = self._lost(worker, self._death_reason(worker))
                    continue
                if reply[0] != seq:  # the answer to an interrupted earlier call: not ours
                    continue
                replies[id(waiting.pop(conn))] = reply[1:]
        return replies

    @staticmethod
    def _lost(worker: _Worker, reason: str) -> tuple[str, str]:
        worker.failure = reason
        return ("lost", reason)

    def _raise_errors(self, replies: dict[int, tuple]) -> None:
        """Raises EnvWorkerError for the first reply that carries an environment's exception."""
        for worker in self._workers:
            reply = replies.get(id(worker))
            if reply is not None and reply[0] == "error":
                first, last = worker.env_indices[0], worker.env_indices[-1]
                raise EnvWorkerError(
                    f"{self.env_id}: an environment among {first}..{last} raised {reply[1]}\n\n"
                    f"worker traceback:\n{reply[2]}"
                )

    @staticmethod
    def _death_reason(worker: _Worker) -> str:
        assert worker.process is not None
        worker.process.join(1.0)
        return f"died (exit code {worker.process.exitcode})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the runner is closed")
