"""A rich progress bar with the live success rate of training and the evaluation count."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class TrainingProgress:
    """Context manager; a no-op when ``enabled`` is False."""

    def __init__(self, cfg, enabled: bool = True):
        self.enabled = enabled
        self.cfg = cfg
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.task = None
        self.eval_task = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.cfg.trainer.iterations, status="rolling out")
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_rollout_step(self, step: int, active: int) -> None:
        self.progress.update(
            self.task, status=f"rollout step {step + 1}/{self.cfg.env.max_steps}, {active} active"
        )

    def end_iteration(self, record: dict) -> None:
        status = (
            f"success {record['success_rate']:.0%}  return {record['mean_return']:+.2f}  "
            f"invalid {record['invalid_action_rate']:.0%}  loss {record['loss']:+.4f}"
        )
        self.progress.update(self.task, completed=record["iteration"] + 1, status=status)

    def start_eval(self, episodes: int) -> None:
        self.eval_task = self.progress.add_task("eval", total=episodes, status="")

    def advance_eval(self, n: int) -> None:
        self.progress.advance(self.eval_task, n)
