"""Where a run's numbers go besides ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow, a
one-line-per-iteration console format, and ``curves.png`` at the end.

    logger = MetricsLogger(LoggingConfig(), run_dir, config=OmegaConf.to_container(cfg))
    logger.log(record, step=record["iteration"])      # each training record, each eval row
    logger.close()
    plot_curves(run_dir)                               # -> run_dir / "curves.png"

TensorBoard is on when ``torch.utils.tensorboard`` imports (the ``tensorboard`` package is
installed), unless ``logging.tensorboard=false``; W&B (``logging.wandb=true``) and MLflow
(``logging.mlflow=true``) only when asked. Each sink gets the record's numbers under
``<kind>/<key>``, ``kind`` being the record's ``kind`` field (``train`` when absent, ``eval`` for
evaluation rows); a ``ci95`` pair becomes ``ci95_low``/``ci95_high`` and nested dicts (per-type
breakdowns) become ``key/subkey``; lists and text are left out.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter
    from wandb.sdk.wandb_run import Run as WandbRun

WandbMode = Literal["online", "offline", "disabled", "shared"]

log = logging.getLogger(__name__)

SKIPPED_KEYS = ("iteration", "kind")


@dataclass
class LoggingConfig:
    """``logging`` config group.

    Args:
        tensorboard: write TensorBoard event files to ``<run>/tensorboard``; None: when installed.
        wandb: log to Weights & Biases (``pip install lamina[logs]``).
        wandb_project: its project; the run is named after the output folder unless ``run_name``.
        wandb_mode: ``online``, ``offline`` or ``disabled``; None: wandb's default (``WANDB_MODE``).
        mlflow: log to MLflow (``pip install lamina[logs]``).
        mlflow_tracking_uri: where; None: MLflow's default (``MLFLOW_TRACKING_URI``, else ./mlruns).
        mlflow_experiment: the MLflow experiment's name.
        run_name: the run's name in W&B and MLflow; None: the output folder's name.
        curves: write ``curves.png`` (matplotlib) at the end of the run.
        telemetry: per-block gradient norm, update/weight ratio and relative change from the
            start in every training record (``lamina.trainer.telemetry``; costs two copies of the
            trainable tensors).
    """

    tensorboard: bool | None = None
    wandb: bool = False
    wandb_project: str = "lamina"
    wandb_mode: str | None = None
    mlflow: bool = False
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "lamina"
    run_name: str | None = None
    curves: bool = True
    telemetry: bool = True


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers as ``{"<kind>/<key>": value}``; see the module docstring."""
    kind = str(record.get("kind", "train"))
    out: dict[str, float] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            out[prefix] = float(value)
        elif isinstance(value, int | float):
            if math.isfinite(value):
                out[prefix] = float(value)
        elif isinstance(value, dict):
            for sub, inner in value.items():
                visit(f"{prefix}/{sub}", inner)
        elif prefix.endswith("ci95") and isinstance(value, list | tuple) and len(value) == 2:
            visit(prefix + "_low", value[0])
            visit(prefix + "_high", value[1])

    for key, value in record.items():
        if key not in SKIPPED_KEYS:
            visit(f"{kind}/{key}", value)
    return out


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class MetricsLogger:
    """Fans each record out to the enabled sinks; a no-op when none is enabled.

    Args:
        cfg: which sinks.
        run_dir: the run's output folder (TensorBoard writes to ``run_dir/tensorboard``, W&B's
            offline files to ``run_dir/wandb``).
        config: the run's resolved config as plain containers (W&B config, MLflow params).
    Raises:
        ValueError: a sink was asked for but its package is not installed (names the extra).
    """

    def __init__(self, cfg: LoggingConfig, run_dir: str | Path, config: dict[str, Any] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_name = cfg.run_name or self.run_dir.resolve().name
        self.writer: SummaryWriter | None = None
        self.wandb_run: WandbRun | None = None
        self.mlflow_client: Any = None  # an mlflow.tracking.MlflowClient; mlflow is optional
        self.mlflow_run_id: str | None = None
        if cfg.tensorboard or (cfg.tensorboard is None and tensorboard_available()):
            self._open_tensorboard()
        if cfg.wandb:
            self._open_wandb(config or {})
        if cfg.mlflow:
            self._open_mlflow(config or {})

    @property
    def sinks(self) -> list[str]:
        """The enabled sinks' names."""
        names = [("tensorboard", self.writer), ("wandb", self.wandb_run), ("mlflow", self.mlflow_run_id)]
        return [name for name, handle in names if handle is not None]

    def _open_tensorboard(self) -> None:
        if not tensorboard_available():
            raise ValueError(
                "logging.tensorboard=true but tensorboard is not installed; "
                "pip install 'lamina[logs]' or set logging.tensorboard=false"
            )
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _open_wandb(self, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise ValueError(
                "logging.wandb=true but wandb is not installed; pip install 'lamina[logs]'"
            ) from None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb_run = wandb.init(
            project=self.cfg.wandb_project,
            name=self.run_name,
            dir=str(self.run_dir),
            config=config,
            mode=cast("WandbMode | None", self.cfg.wandb_mode),  # a str field: OmegaConf has no Literal
            reinit="create_new",  # one run per logger, even inside a process that made others
        )

    def _open_mlflow(self, config: dict[str, Any]) -> None:
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ValueError(
                "logging.mlflow=true but mlflow is not installed; pip install 'lamina[logs]'"
            ) from None
        # The client API keeps no process-global active run, unlike mlflow.start_run().
        client = MlflowClient(tracking_uri=self.cfg.mlflow_tracking_uri)
        experiment = client.get_experiment_by_name(self.cfg.mlflow_experiment)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(self.cfg.mlflow_experiment)
        )
        run = client.create_run(experiment_id, run_name=self.run_name)
        params = [Param(key, value[:500]) for key, value in _flatten_params(config)]  # MLflow caps at 500
        for start in range(0, len(params), 100):  # and at 100 params per batch
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        self.mlflow_client, self.mlflow_run_id = client, run.info.run_id

    def log(self, record: dict[str, Any], step: int) -> None:
        """Sends the record's numbers to every sink at ``step`` (the iteration; steps must not go back
        for W&B, so log an evaluation after the iteration it follows)."""
        values = scalars(record)
        if not values:
            return
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)
        if self.mlflow_client is not None:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(_mlflow_key(tag), value, now, step) for tag, value in values.items()]
            for start in range(0, len(metrics), 1000):  # MLflow's batch limit
                self.mlflow_client.log_batch(self.mlflow_run_id, metrics=metrics[start : start + 1000])

    def close(self) -> None:
        """Flushes and closes every sink; safe to call twice."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
        if self.mlflow_client is not None:
            self.mlflow_client.set_terminated(self.mlflow_run_id)
            self.mlflow_client = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> Literal[False]:
        self.close()
        return False


def _flatten_params(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten_params(value, name + ".")
        else:
            yield name, json.dumps(value) if not isinstance(value, str) else value


def _mlflow_key(tag: str) -> str:
    """MLflow keys allow alphanumerics, ``_ - . / `` and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in tag)


# ---------------------------------------------------------------------------------------------
# Console lines for non-interactive output (log files, CI): one line per iteration.
# ---------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def tokens_per_second(record: dict[str, Any]) -> float | None:
    """Generated tokens per rollout second: ``tokens_per_s`` if the record has it, else
    ``rows * mean_response_tokens / rollout_s``; None when neither is known."""
    if "tokens_per_s" in record:
        return float(record["tokens_per_s"])
    try:
        return record["rows"] * record["mean_response_tokens"] / record["rollout_s"]
    except (KeyError, ZeroDivisionError, TypeError):
        return None


def format_iteration_line(
    record: dict[str, Any], total_iterations: int | None = None, eta_s: float | None = None
) -> str:
    """One line for a training record (or an eval row, ``kind: "eval"``); missing fields are left out.

    Example: ``iter 3/10  success 62%  return +0.41  invalid 5%  kl 0.0012  loss -0.0123
    150 tok/s  52s/iter  eta 6m04s``.
    """
    if record.get("kind") == "eval":
        parts = [f"eval @{record.get('iteration', '?')}", f"success {record['success_rate']:.1%}"]
        if "ci95" in record:
            low, high = record["ci95"]
            parts[-1] += f" (95% CI {low:.1%}-{high:.1%})"
        if "episodes" in record:
            parts.append(f"{record['episodes']} episodes")
        if "mean_return" in record:
            parts.append(f"return {record['mean_return']:+.2f}")
        return "  ".join(parts)
    iteration = record.get("iteration")
    head = f"iter {iteration + 1 if isinstance(iteration, int) else '?'}"
    parts = [head + (f"/{total_iterations}" if total_iterations else "")]
    fields = (
        ("success_rate", "success {:.0%}"),
        ("mean_return", "return {:+.2f}"),
        ("invalid_action_rate", "invalid {:.0%}"),
        ("kl", "kl {:.4f}"),
        ("loss", "loss {:+.4f}"),
        ("lr", "lr {:.2e}"),
    )
    parts += [fmt.format(record[key]) for key, fmt in fields if key in record]
    if (speed := tokens_per_second(record)) is not None:
        parts.append(f"{speed:.0f} tok/s")
    seconds = sum(record.get(key, 0.0) for key in ("rollout_s", "update_s"))
    if seconds:
        parts.append(f"{_duration(seconds)}/iter")
    if eta_s is not None:
        parts.append(f"eta {_duration(eta_s)}")
    return "  ".join(parts)


# ---------------------------------------------------------------------------------------------
# curves.png
# ---------------------------------------------------------------------------------------------


def read_run_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """Training records and evaluation points of a run, each eval point with its ``iteration``.

    Evaluation points: ``eval_base.json`` at 0 (the untrained model), rows of ``metrics.jsonl``
    with ``kind: "eval"`` at their ``iteration`` (the number of updates done), and ``eval.json``
    after the last training record. Points with the same iteration are kept once (the first).
    """
    run_dir = Path(run_dir)
    train_rows: list[dict] = []
    eval_rows: list[dict] = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                (eval_rows if row.get("kind") == "eval" else train_rows).append(row)
    base = run_dir / "eval_base.json"
    if base.exists():
        eval_rows.insert(0, {**json.loads(base.read_text()), "iteration": 0})
    final = run_dir / "eval.json"
    if final.exists():
        done = max((r["iteration"] + 1 for r in train_rows), default=0)
        eval_rows.append({**json.loads(final.read_text()), "iteration": done})
    seen: set = set()
    unique = []
    for row in eval_rows:
        if row["iteration"] not in seen:
            seen.add(row["iteration"])
            unique.append(row)
    return train_rows, unique


def curves_figure(run_dir: str | Path):
    """The ``matplotlib.figure.Figure`` of ``plot_curves``: four panels, 2 x 2 (success, return, KL,
    invalid-action rate).

    Raises:
        ValueError: the folder has neither training records nor evaluation results.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    train_rows, eval_rows = read_run_metrics(run_dir)
    if not train_rows and not eval_rows:
        raise ValueError(f"{run_dir} has no metrics.jsonl records nor eval results to plot")
    x = [r["iteration"] for r in train_rows]
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    panels = (
        ("success_rate", "success rate"),
        ("mean_return", "mean return"),
        ("kl", "KL to reference"),
        ("invalid_action_rate", "invalid-action rate"),
    )
    for ax, (key, title) in zip(axes, panels, strict=True):
        points = [(i, r[key]) for i, r in zip(x, train_rows, strict=True) if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label="training rollouts")
        ax.set_title(title)
        ax.set_xlabel("iteration (updates done)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    success_ax = axes[0]
    if eval_rows:
        ex = [r["iteration"] for r in eval_rows]
        ey = [r["success_rate"] for r in eval_rows]
        low = [r["success_rate"] - r.get("ci95", [r["success_rate"]] * 2)[0] for r in eval_rows]
        high = [r.get("ci95", [r["success_rate"]] * 2)[1] - r["success_rate"] for r in eval_rows]
        success_ax.errorbar(
            ex, ey, yerr=[low, high], fmt="o", capsize=4, color="tab:red", label="held-out eval (95% CI)"
        )
        ret = [(r["iteration"], r["mean_return"]) for r in eval_rows if "mean_return" in r]
        if ret:
            axes[1].plot(*zip(*ret, strict=True), "o", color="tab:red", label="held-out eval")
            axes[1].legend(loc="best", fontsize="small")
    for ax in (axes[0], axes[3]):
        ax.set_ylim(-0.03, 1.03)
    success_ax.legend(loc="best", fontsize="small")
    fig.suptitle(run_dir.resolve().name)
    return fig


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes ``curves.png``: success (training, and evaluation points with their 95% intervals),
    mean return, KL to the reference and invalid-action rate, over iterations (1000 x 700 px).

    Args:
        run_dir: a run folder with ``metrics.jsonl`` (and ``eval.json`` / ``eval_base.json``).
        out: the image path; default ``run_dir/curves.png``.
    Returns:
        The image path.
    Raises:
        ValueError: the folder has neither training records nor evaluation results.
    """
    target = Path(out) if out is not None else Path(run_dir) / "curves.png"
    curves_figure(run_dir).savefig(target, dpi=100)
    return target
