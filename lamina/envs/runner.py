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

A worker that dies (killed, segfault) or does not answer within ``step_timeout_s`` is killed and
restarted with fresh environments. The episodes it was playing end with ``truncated=True``,
``info["worker_restarted"] = True`` and an observation saying the episode was cut; the next
``reset`` works normally and ``restarts`` counts the restarts. Training goes on.

Note: like any ``spawn`` child, a worker imports the parent's ``__main__`` module (not under
``if __name__ == "__main__"``); keep heavy imports in a script's functions or under that guard.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from lamina.envs.registry import make, resolve_env_id

# Seconds a worker gets to build its environments (ALFWorld scans its games, WebShop builds a
# BM25 index) before it counts as hung; generous because other processes may share the cores.
STARTUP_TIMEOUT_S = 600.0
# Seconds close() waits for a worker to exit on its own before killing it.
CLOSE_GRACE_S = 5.0
# Resets retried on a fresh worker after its predecessor died during the reset.
RESET_RETRIES = 2


class EnvConstructionError(RuntimeError):
    """An environment could not be created (bad kwargs, missing data); names the env and the cause."""


class EnvWorkerError(RuntimeError):
    """An environment raised inside ``reset``/``step``; carries the worker's traceback."""


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
        self.envs = [make(env_name, max_episode_steps=max_episode_steps, **env_kwargs) for _ in range(count)]

    def reset(self, requests: list[tuple[int, int | None, dict[str, Any] | None]]) -> list[tuple[str, dict]]:
        """``(local index, seed, options)`` per environment to reset -> ``(observation, info)`` each."""
        return [self.envs[i].reset(seed=seed, options=options) for i, seed, options in requests]

    def step(self, requests: list[tuple[int, str]]) -> list[tuple[str, float, bool, bool, dict]]:
        """``(local index, action)`` per environment to step -> Gymnasium's 5-tuple each."""
        results = []
        for i, action in requests:
            observation, reward, terminated, truncated, info = self.envs[i].step(action)
            results.append((observation, float(reward), bool(terminated), bool(truncated), info))
        return results

    def expert_actions(self) -> list[str | None]:
        """Each environment's ``expert_action()``; None where it has none."""
        actions = []
        for env in self.envs:
            expert = getattr(env.unwrapped, "expert_action", None)
            actions.append(expert() if callable(expert) else None)
        return actions

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _error_reply(error: BaseException) -> tuple[str, str, str]:
    return ("error", f"{type(error).__name__}: {error}", traceback.format_exc())


def _worker_main(
    conn: Connection, env_name: str, count: int, env_kwargs: dict[str, Any], max_episode_steps: int | None
) -> None:
    """The worker process: builds its environments, then answers commands until ``close`` or EOF.

    Replies are ``("ok", payload)`` or ``("error", message, traceback)``; an environment that
    raises does not end the worker (the parent decides what to do).
    """
    # Ctrl-C reaches the whole process group; the parent handles it and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        envs = _EnvSlice(env_name, count, env_kwargs, max_episode_steps)
    except BaseException as error:  # any constructor failure must reach the parent, not hang it
        conn.send(_error_reply(error))
        conn.close()
        return
    conn.send(("ok", None))
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        if command == "close":
            break
        try:
            if command == "reset":
                reply: tuple = ("ok", envs.reset(payload))
            elif command == "step":
                reply = ("ok", envs.step(payload))
            elif command == "expert":
                reply = ("ok", envs.expert_actions())
            else:
                reply = ("error", f"unknown command {command!r}", "")
        except Exception as error:
            reply = _error_reply(error)
        try:
            conn.send(reply)
        except (EOFError, OSError):  # the parent is gone
            break
        except Exception as error:  # an info value that cannot be pickled: report it, keep serving
            conn.send(_error_reply(error))
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
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0 (0 runs in-process)")
        if step_timeout_s <= 0:
            raise ValueError(f"step_timeout_s={step_timeout_s} must be > 0")
        # Resolve here so an unknown name fails at once, with the list of valid names.
        self.env_id = resolve_env_id(env_name)
        self.num_envs = num_envs
        self.env_kwargs = dict(env_kwargs or {})
        self.max_episode_steps = max_episode_steps
        self.step_timeout_s = float(step_timeout_s)
        self.restarts = 0
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
        """Each environment's ``expert_action()``: None where unavailable or the episode was cut."""
        self._check_open()
        replies = self._run({id(w): ("expert", None) for w in self._workers})
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
                    worker.conn.send(("close", None))
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
            args=(child_conn, self.env_id, len(worker.env_indices), self.env_kwargs, self.max_episode_steps),
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
            reply = worker.conn.recv()
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

    def _run(self, commands: dict[int, tuple[str, Any]]) -> dict[int, tuple]:
        """Sends each worker (keyed by ``id``) its command and collects one reply per worker.

        Replies: ``("ok", payload)``; ``("lost", reason)`` for a worker that died, hung past
        ``step_timeout_s`` or could not be written to (the caller restarts it); ``("error", message,
        traceback)`` for an environment that raised (the worker itself is fine).
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

        waiting: dict[Any, _Worker] = {}
        for worker in workers:
            assert worker.conn is not None
            try:
                worker.conn.send(commands[id(worker)])
                waiting[worker.conn] = worker
            except OSError:  # BrokenPipeError: it died since the last call
                replies[id(worker)] = self._lost(worker, self._death_reason(worker))
        # Every worker got its command before any answer is awaited: they run concurrently.
        deadline = time.monotonic() + self.step_timeout_s
        while waiting:
            remaining = deadline - time.monotonic()
            ready = wait(list(waiting), timeout=remaining) if remaining > 0 else []
            if not ready:
                for worker in waiting.values():
                    replies[id(worker)] = self._lost(
                        worker, f"did not answer within {self.step_timeout_s:g} s"
                    )
                break
            for conn in ready:
                worker = waiting.pop(conn)
                try:
                    replies[id(worker)] = conn.recv()  # type: ignore[union-attr]
                except (EOFError, OSError):  # died mid-call
                    replies[id(worker)] = self._lost(worker, self._death_reason(worker))
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
