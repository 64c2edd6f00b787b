"""End to end: a tiny sweep with single-block and LoRA arms writes every file, with telemetry,
forgetting, cost per arm and the power analysis."""

from __future__ import annotations

import csv
import json

import pytest

from lamina.cli import main
from lamina.study.config import compose_sweep_config
from lamina.study.sweep import run_sweep

FAST = [
    "model=tiny-random",
    "rollout.group_size=2",
    "rollout.batch_size=2",
    "rollout.max_new_tokens=4",
    "env.max_steps=2",
    "env.train_tasks=2",
    "eval.episodes=2",
    "study.bootstrap=200",
    "trainer.iterations=1",
    "trainer.progress=false",
    "logging.curves=false",
]


@pytest.mark.slow
def test_mixed_arms_sweep_writes_every_file(tmp_path):
    cfg = compose_sweep_config(
        [
            *FAST,
            "study.layers=[0,2]",
            "study.arms=[lora:1@all]",
            "study.forgetting_episodes=2",
            "study.forgetting_env=frozenlake",
            "study.forgetting_env_overrides=['env.max_steps=2']",
            "study.power_pair=[0,full]",
            f"study.output_dir={tmp_path}",
        ]
    )
    run_sweep(cfg)
    arms = ["base-seed0", "full-seed0", "block00-seed0", "block02-seed0", "lora1@all-seed0"]
    for name in (
        "contribution.csv",
        "contribution.md",
        "contribution.png",
        "arms.png",
        "summary.json",
        "differences.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    for arm in arms:
        forgetting = json.loads((tmp_path / arm / "forgetting.json").read_text())
        assert forgetting["other_env"] == "frozenlake" and len(forgetting["other_won"]) == 2
        assert forgetting["kl_to_base"] >= 0
    assert json.loads((tmp_path / "base-seed0" / "forgetting.json").read_text())["kl_to_base"] == 0
    block = [json.loads(x) for x in (tmp_path / "block02-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert set(block[0]["telemetry"]["grad_norm"]) == {"2"}
    rows = {r["block"]: r for r in csv.DictReader((tmp_path / "contribution.csv").open())}
    assert set(rows) == {"base", "full", "0", "2", "lora1@all"}
    for key in ("full", "0", "2", "lora1@all"):
        row = rows[key]
        assert float(row["wall_s"]) > 0 and float(row["update_flops_per_token"]) > 0, key
        assert row["kl_to_base"] != "" and row["other_success"] != "", key
    assert float(rows["base"]["kl_to_base"]) == 0 and float(rows["base"]["trainable_parameters"]) == 0
    # The LoRA arm trains its adapters only: far fewer parameters than one block.
    assert 0 < float(rows["lora1@all"]["trainable_parameters"]) < float(rows["0"]["trainable_parameters"])
    assert float(rows["0"]["trainable_parameters"]) < float(rows["full"]["trainable_parameters"])
    pairs = list(csv.DictReader((tmp_path / "differences.csv").open()))
    assert len(pairs) == 10  # every pair of the 5 arms
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["power"]["chosen"]["arm_a"] == "block 0" and summary["power"]["chosen"]["arm_b"] == "full"
    text = (tmp_path / "contribution.md").read_text()
    assert "## Forgetting and cost per arm" in text and "## Which differences are resolved" in text
    assert main(["weights", str(tmp_path / "block02-seed0")]) == 0
    assert (tmp_path / "block02-seed0" / "telemetry.png").stat().st_size > 0
