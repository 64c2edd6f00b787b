"""Live progress of a run: a rich bar on a terminal, one line per iteration elsewhere.

On a terminal the bar shows the phase (rollout step, update micro-batches, evaluation) and the
last iteration's success, return, KL, tokens/s and ETA. In a log file or CI, where a redrawn bar
would be noise, every iteration and evaluation prints one line instead
(``lamina.trainer.logs.format_iteration_line``).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from lamina.trainer.logs import format_iteration_line


class TrainingProgress:
    """Context manager; silent when ``enabled`` is False.

    Args:
        cfg: the run config (iterations, steps per episode).
        enabled: show progress at all.
        interactive: redraw a bar (default: when stderr is a terminal).
        training: show the iterations' bar (False for ``lamina eval``, which only evaluates).
    """

    def __init__(self, cfg, enabled: bool = True, interactive: bool | None = None, training: bool = True):
        self.cfg = cfg
        self.training = training
        self.enabled = enabled
        self.interactive = enabled and (sys.stderr.isatty() if interactive is None else interactive)
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            disable=not self.interactive,
        )
        self.task: TaskID | None = None  # the iterations' bar, when training
        self.eval_task: TaskID | None = None
        self.started = time.perf_counter()
        self.first_iteration: int | None = None
        self.last_status = ""

    def __enter__(self):
        self.progress.__enter__()
        if self.training:
            self.task = self.progress.add_task("train", total=self.cfg.trainer.iterations, status="starting")
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _status(self, phase: str) -> None:
        if self.task is None:
            return
        status = f"{phase}  {self.last_status}".strip()
        self.progress.update(self.task, status=status)

    def start_iteration(self, iteration: int) -> None:
        if self.first_iteration is None:
            self.first_iteration, self.started = iteration, time.perf_counter()
        assert self.task is not None, "start_iteration() needs training=True"
        self.progress.update(self.task, completed=iteration)

    def on_rollout_step(self, step: int, active: int) -> None:
        self._status(f"rollout step {step + 1}/{self.cfg.env.max_steps}, {active} active")

    def start_update(self, rows: int) -> None:
        self._status(f"updating {rows} rows")

    def on_update_step(self, done: int, total: int) -> None:
        self._status(f"updating: micro-batch {done}/{total}")

    def start_eval(self, episodes: int, label: str = "eval") -> None:
        if self.eval_task is not None:
            self.progress.remove_task(self.eval_task)
        self.eval_task = self.progress.add_task(label, total=episodes, status="")

    def on_eval_step(self, step: int, active: int) -> None:
        if self.eval_task is not None:
            status = f"step {step + 1}/{self.cfg.env.max_steps}, {active} active"
            self.progress.update(self.eval_task, status=status)

    def advance_eval(self, n: int) -> None:
        """``n`` more episodes done; without a bar, one line per chunk (a long ALFWorld evaluation
        would otherwise print nothing for an hour)."""
        if self.eval_task is None:
            return
        self.progress.advance(self.eval_task, n)
        if self.enabled and not self.interactive:
            # A disabled rich bar still counts its task: the line reads the count from there.
            task = next(t for t in self.progress.tasks if t.id == self.eval_task)
            print(
                f"{task.description}: {task.completed:.0f}/{task.total:.0f} episodes, {task.elapsed:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def eta_s(self, iteration: int) -> float | None:
        """Seconds left, from the mean duration of the iterations this process ran."""
        if self.first_iteration is None:
            return None
        done = iteration + 1 - self.first_iteration
        return (time.perf_counter() - self.started) / done * (self.cfg.trainer.iterations - iteration - 1)

    def report(self, row: dict) -> None:
        """An iteration's record or an evaluation result (``kind: "eval"``)."""
        if not self.enabled:
            return
        is_eval = row.get("kind") == "eval"
        eta = None if is_eval else self.eta_s(row["iteration"])
        line = format_iteration_line(row, self.cfg.trainer.iterations, eta)
        if self.interactive:
            if not is_eval:
                self.last_status = line.split("  ", 1)[-1]
                assert self.task is not None, "an iteration's record needs training=True"
                self.progress.update(self.task, completed=row["iteration"] + 1, status=self.last_status)
            else:
                self.progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)
