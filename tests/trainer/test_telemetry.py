"""Per-block telemetry against a hand computation on the tiny model, and in a real run's outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lamina.cli import compose_config
from lamina.trainer.telemetry import BlockTelemetry
from lamina.trainer.train import train


def _block(model, b: int) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.startswith(f"model.layers.{b}.")]


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def test_values_match_a_hand_computation(tiny_model):
    blocks = {1: _block(tiny_model, 1), 3: _block(tiny_model, 3)}
    trainable = blocks[1] + blocks[3]
    start = {b: [p.detach().clone() for p in ps] for b, ps in blocks.items()}
    telemetry = BlockTelemetry(tiny_model, trainable)
    assert telemetry.keys == ["1"] * len(blocks[1]) + ["3"] * len(blocks[3])
    assert telemetry.trainable_parameters == sum(p.numel() for p in trainable)
    # Lowest trainable block 1: blocks 1..3 and the (tied) LM head are traversed.
    layers = tiny_model.model.layers
    traversed = sum(p.numel() for b in (1, 2, 3) for p in layers[b].parameters())
    traversed += tiny_model.get_output_embeddings().weight.numel()
    assert telemetry.update_flops_per_token == 4 * traversed + 2 * telemetry.trainable_parameters

    gen = torch.Generator().manual_seed(0)
    for iteration in range(2):
        telemetry.begin_iteration()
        before = {b: [p.detach().clone() for p in ps] for b, ps in blocks.items()}
        grads = {b: [] for b in blocks}
        for _step in range(2):  # two optimizer steps in one iteration
            for b, ps in blocks.items():
                step_grads = [torch.randn(p.shape, generator=gen) * (b + 1) for p in ps]
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad = g
                grads[b].append(_norm(step_grads))
            telemetry.record_gradients()
            with torch.no_grad():
                for ps in blocks.values():
                    for p in ps:
                        d = torch.randn(p.shape, generator=gen) * 1e-3 * (iteration + 1)
                        p.add_(d)
        row = telemetry.end_iteration()["telemetry"]
        for b, ps in blocks.items():
            key = str(b)
            assert row["grad_norm"][key] == pytest.approx(sum(grads[b]) / 2, rel=1e-5)
            update = _norm([p.detach() - q for p, q in zip(ps, before[b], strict=True)])
            assert row["update_ratio"][key] == pytest.approx(update / _norm(before[b]), rel=1e-4)
            drift = _norm([p.detach() - q for p, q in zip(ps, start[b], strict=True)])
            assert row["relative_change"][key] == pytest.approx(drift / _norm(start[b]), rel=1e-4)
        assert set(row["grad_norm"]) == {"1", "3"}
    # After two iterations the drift is larger than the last iteration's update alone.
    assert row["relative_change"]["1"] > row["update_ratio"]["1"] > 0


def test_a_run_logs_telemetry_to_metrics_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [
        "model=tiny-random",
        "rollout.group_size=2",
        "rollout.batch_size=2",
        "rollout.max_new_tokens=4",
        "env.max_steps=2",
        "env.train_tasks=2",
        "eval.episodes=0",
        "eval.base=false",
        "trainer.progress=false",
        "trainer.iterations=2",
        "layers=[1,2]",
        "logging.tensorboard=true",
        "logging.curves=false",
        f"trainer.output_dir={tmp_path / 'on'}",
    ]
    out = train(compose_config(overrides))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert set(row["telemetry"]) == {"grad_norm", "update_ratio", "relative_change"}
        assert set(row["telemetry"]["relative_change"]) == {"1", "2"}
        assert row["trainable_parameters"] > 0 and row["update_flops_per_token"] > 0
        assert row["peak_memory_mb"] > 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/telemetry/grad_norm/1" in tags and "train/telemetry/relative_change/2" in tags
    off = train(
        compose_config([*overrides[:-1], "logging.telemetry=false", f"trainer.output_dir={tmp_path / 'off'}"])
    )
    first = json.loads((off / "metrics.jsonl").read_text().splitlines()[0])
    assert "telemetry" not in first
