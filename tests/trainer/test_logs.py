"""Logs and pictures: TensorBoard event files, W&B offline, MLflow file store, console lines, curves.png."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lamina.trainer.logs import (
    LoggingConfig,
    MetricsLogger,
    curves_figure,
    format_iteration_line,
    plot_curves,
    read_run_metrics,
    scalars,
)

RECORDS = [
    {
        "iteration": i,
        "success_rate": s,
        "mean_return": s - 0.1,
        "invalid_action_rate": 0.5 - s / 2,
        "loss": -0.01 * i,
        "kl": 0.001 * i,
        "rows": 16,
        "mean_response_tokens": 6.0,
        "rollout_s": 8.0,
        "update_s": 2.0,
    }
    for i, s in enumerate([0.1, 0.3, 0.5, 0.8])
]
EVAL_ROW = {"kind": "eval", "iteration": 2, "success_rate": 0.4, "ci95": [0.2, 0.6], "episodes": 20}
NONE = {"tensorboard": False, "wandb": False, "mlflow": False}


def write_run(run_dir):
    lines = (
        [json.dumps(r) for r in RECORDS[:2]] + [json.dumps(EVAL_ROW)] + [json.dumps(r) for r in RECORDS[2:]]
    )
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "eval_base.json").write_text(json.dumps({"success_rate": 0.1, "ci95": [0.03, 0.3]}))
    (run_dir / "eval.json").write_text(
        json.dumps({"success_rate": 0.7, "ci95": [0.5, 0.85], "mean_return": 0.6, "won": [True, False]})
    )


def test_scalars_namespaces_and_flattens():
    values = scalars({**EVAL_ROW, "by_type": {"pick": {"success_rate": 0.5}}, "seeds": [1, 2], "note": "x"})
    assert values == {
        "eval/success_rate": 0.4,
        "eval/ci95_low": 0.2,
        "eval/ci95_high": 0.6,
        "eval/episodes": 20.0,
        "eval/by_type/pick/success_rate": 0.5,
    }
    assert scalars(RECORDS[1])["train/kl"] == pytest.approx(0.001)


def test_no_sink_is_a_no_op(tmp_path):
    with MetricsLogger(LoggingConfig(**NONE), tmp_path) as logger:
        assert logger.sinks == []
        logger.log(RECORDS[0], step=0)
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_event_files_hold_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(LoggingConfig(), tmp_path)  # on by default when installed
    assert logger.sinks == ["tensorboard"]
    for record in RECORDS:
        logger.log(record, step=record["iteration"])
    logger.log(EVAL_ROW, step=2)
    logger.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    success = acc.Scalars("train/success_rate")
    assert [e.step for e in success] == [0, 1, 2, 3]
    assert [e.value for e in success] == pytest.approx([0.1, 0.3, 0.5, 0.8])
    assert acc.Scalars("eval/ci95_high")[0].value == pytest.approx(0.6)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (lamina[logs])")
def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = LoggingConfig(**{**NONE, "wandb": True, "wandb_mode": "offline"}, run_name="t")
    logger = MetricsLogger(cfg, tmp_path, config={"trainer": {"lr": 1e-4}})
    assert logger.sinks == ["wandb"]
    for record in RECORDS:
        logger.log(record, step=record["iteration"])
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (lamina[logs])")
def test_mlflow_local_store_gets_metrics_and_params(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # MLflow 3 keeps the file store only on request; it is the no-server local store tests can use.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    cfg = LoggingConfig(**{**NONE, "mlflow": True, "mlflow_tracking_uri": uri})
    logger = MetricsLogger(cfg, tmp_path / "run", config={"trainer": {"lr": 1e-4}, "layers": [2, 3]})
    run_id = logger.mlflow_run_id
    for record in RECORDS:
        logger.log(record, step=record["iteration"])
    logger.close()
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params == {"trainer.lr": "0.0001", "layers": "[2, 3]"}
    history = client.get_metric_history(run_id, "train/success_rate")
    history = sorted((m.step, m.value) for m in history)
    assert [m[0] for m in history] == [0, 1, 2, 3]
    assert [m[1] for m in history] == pytest.approx([0.1, 0.3, 0.5, 0.8])


def test_iteration_line():
    line = format_iteration_line(RECORDS[1], total_iterations=4, eta_s=125)
    assert line == (
        "iter 2/4  success 30%  return +0.20  invalid 35%  kl 0.0010  loss -0.0100  "
        "12 tok/s  10s/iter  eta 2m05s"
    )
    assert "\n" not in line
    assert format_iteration_line(EVAL_ROW) == "eval @2  success 40.0% (95% CI 20.0%-60.0%)  20 episodes"


def test_curves_png_has_four_panels_with_eval_points(tmp_path):
    from PIL import Image

    write_run(tmp_path)
    train_rows, eval_rows = read_run_metrics(tmp_path)
    assert [r["iteration"] for r in train_rows] == [0, 1, 2, 3]
    assert [(r["iteration"], r["success_rate"]) for r in eval_rows] == [(0, 0.1), (2, 0.4), (4, 0.7)]
    fig = curves_figure(tmp_path)
    assert [ax.get_title() for ax in fig.axes] == [
        "success rate",
        "mean return",
        "KL to reference",
        "invalid-action rate",
    ]
    success = fig.axes[0]
    assert len(success.lines) >= 1 and len(success.containers) == 1  # training line, eval error bars
    path = plot_curves(tmp_path)
    assert path == tmp_path / "curves.png"
    assert Image.open(path).size == (1000, 700)


def test_curves_refuse_an_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="has no metrics.jsonl records nor eval results"):
        plot_curves(tmp_path)
