"""Extra sweep arms (study.arms): LoRA, multi-block and top-K arms with their own learning rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweep_files import write_eval
from test_sweep import FAST

from lamina.cli import main
from lamina.errors import ConfigError
from lamina.study.arms import Arm, arm_config, arm_label, arm_memory_gib, parse_arm_name, study_arms
from lamina.study.config import compose_sweep_config
from lamina.study.sweep import run_sweep


def _top_sweep(tmp_path) -> Path:
    """A finished sweep's contribution.csv in which blocks 2 and 0 score best."""
    earlier = tmp_path / "earlier-sweep"
    earlier.mkdir()
    rows = ["block,score,contribution", "base,0.1,0", "full,0.5,1", "0,0.4,0.75", "1,0.2,0.25", "2,0.6,1.25"]
    (earlier / "contribution.csv").write_text("\n".join(rows) + "\n")
    return earlier


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ("lora:1@all", "lora1@all"),
        ("lora:4", "lora4@all"),
        ("lora:8@2", "lora8@2"),
        ("lora:2@[0, 3]", "lora2@0+3"),
        ("lora:2@middle:2", "lora2@middle2"),
        ("middle:2", "middle2"),
        ("1-3", "blocks1-3"),
        ([3, 1], "blocks1+3"),
        (2, "blocks2"),
    ],
)
def test_arm_labels(spec, label):
    assert arm_label(spec, 4) == label
    assert parse_arm_name(f"{label}-seed3") == Arm(label, 3)


def test_top_k_arm_of_an_earlier_sweep(tmp_path):
    earlier = _top_sweep(tmp_path)
    assert arm_label(f"top:2@{earlier}", 4) == "top2@earlier-sweep"
    cfg = compose_sweep_config([*FAST, "study.layers=[1]", f"study.arms=['top:2@{earlier}']"])
    (arm,) = [a for a in study_arms(cfg.study, [1], 4, 1e-5) if a.kind.startswith("top")]
    run = arm_config(cfg.run_config(), arm, tmp_path, 4)
    from lamina.trainer.layers import parse_layers

    assert parse_layers(run.layers, 4) == [0, 2]


def test_top_k_arm_keeps_the_blocks_it_was_first_planned_with(tmp_path):
    """A top-K arm's source sweep may change while the sweep runs (e.g. it is the sweep's own
    folder gaining seeds); later seeds and resumed arms train the blocks picked the first time."""
    earlier = _top_sweep(tmp_path)
    sweep = tmp_path / "sweep"
    arms = f"study.arms=['top:2@{earlier}','lora:1@top:1@{earlier}']"
    overrides = [*FAST, "study.layers=[1]", arms, f"study.output_dir={sweep}"]
    first = Recorder()
    run_sweep(compose_sweep_config(overrides), train_fn=first)
    layers = {Path(c.trainer.output_dir).name: c.layers for c in first.calls}
    assert layers["top2@earlier-sweep-seed0"] == [0, 2]
    assert layers["lora1@top1@earlier-sweep-seed0"] == "lora:1@[2]"
    plan = {row["arm"]: row for row in json.loads((sweep / "arms.json").read_text())}
    assert plan["top2@earlier-sweep-seed0"]["blocks"] == [0, 2] and plan["block01-seed0"]["blocks"] == [1]
    # A run of a subset (seed 1, no top arm) keeps the top arm's row, so its pin survives it.
    subset = [*FAST, "study.layers=[1]", "study.arms=[]", "study.seeds=[1]", f"study.output_dir={sweep}"]
    run_sweep(compose_sweep_config(subset), train_fn=Recorder())
    plan = {row["arm"]: row for row in json.loads((sweep / "arms.json").read_text())}
    assert plan["top2@earlier-sweep-seed0"]["blocks"] == [0, 2] and "full-seed1" in plan
    # The source now ranks blocks 1 and 0 best; a second seed still trains the first pick.
    rows = ["block,score,contribution", "base,0.1,0", "full,0.5,1", "0,0.4,0.75", "1,0.9,2", "2,0.1,0"]
    (earlier / "contribution.csv").write_text("\n".join(rows) + "\n")
    second = Recorder()
    run_sweep(compose_sweep_config([*overrides, "study.seeds=[0,1]"]), train_fn=second)
    layers = {Path(c.trainer.output_dir).name: c.layers for c in second.calls}
    assert layers["top2@earlier-sweep-seed1"] == [0, 2]
    assert layers["lora1@top1@earlier-sweep-seed1"] == "lora:1@[2]"
    # Restored without the source's table (results/ keeps arms.json, not contribution.csv), the
    # pinned arms still plan; a folder with no pin needs the table.
    (earlier / "contribution.csv").rename(earlier / "moved.csv")
    third = Recorder()
    run_sweep(compose_sweep_config([*overrides, "study.seeds=[0,1,2]"]), train_fn=third)
    layers = {Path(c.trainer.output_dir).name: c.layers for c in third.calls}
    assert layers["top2@earlier-sweep-seed2"] == [0, 2]
    assert layers["lora1@top1@earlier-sweep-seed2"] == "lora:1@[2]"
    with pytest.raises(ConfigError, match=r"top:2@.*contribution.csv does not exist"):
        run_sweep(compose_sweep_config([*overrides[:-1], f"study.output_dir={tmp_path / 'other'}"]))
    (earlier / "moved.csv").rename(earlier / "contribution.csv")
    # A new sweep folder reads the source as it is now.
    fresh = Recorder()
    run_sweep(compose_sweep_config([*overrides[:-1], f"study.output_dir={tmp_path / 'new'}"]), train_fn=fresh)
    layers = {Path(c.trainer.output_dir).name: c.layers for c in fresh.calls}
    assert layers["top2@earlier-sweep-seed0"] == [0, 1]


def test_plan_learning_rates_and_folders(tmp_path):
    cfg = compose_sweep_config(
        [
            *FAST,
            "trainer.lr=1e-5",
            "study.layers=[0,2]",
            "study.seeds=[0,1]",
            "study.arms=[lora:1@all,lora:4@2,middle:2]",
            "++study.lr_per_arm={full:2e-5,block:1e-4,2:3e-4,lora4@2:5e-4}",
        ]
    )
    arms = study_arms(cfg.study, [0, 2], 4, cfg.trainer.lr)
    names = [a.name(4) for a in arms]
    assert names[:8] == [
        "base-seed0", "base-seed1", "full-seed0", "full-seed1",
        "block00-seed0", "block02-seed0", "block00-seed1", "block02-seed1",
    ]  # fmt: skip
    assert names[8:] == [f"{n}-seed{s}" for s in (0, 1) for n in ("lora1@all", "lora4@2", "middle2")]
    lr = {a.name(4): arm_config(cfg.run_config(), a, tmp_path, 4).trainer.lr for a in arms}
    assert lr["base-seed0"] == 1e-5 and lr["full-seed1"] == 2e-5
    assert lr["block00-seed0"] == 1e-4 and lr["block02-seed0"] == 3e-4  # "2" beats "block"
    assert lr["lora1@all-seed0"] == pytest.approx(1e-4)  # the LoRA rule: 10 x trainer.lr
    assert lr["lora4@2-seed1"] == 5e-4 and lr["middle2-seed0"] == 1e-5
    layers = {a.name(4): arm_config(cfg.run_config(), a, tmp_path, 4).layers for a in arms}
    assert layers["lora4@2-seed0"] == "lora:4@2" and layers["middle2-seed1"] == "middle:2"
    scaled = compose_sweep_config([*FAST, "study.arms=[lora:1@all]", "study.lora_lr_scale=3"])
    (lora,) = [a for a in study_arms(scaled.study, [0], 4, 1e-5) if a.kind == "lora1@all"]
    assert lora.lr == pytest.approx(3e-5)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("study.arms=[lora:0@all]", "study.arms: 'lora:0@all' is not a LoRA spec; valid forms: 'lora:R'"),
        ("study.arms=[lora:1@9]", "study.arms: 'lora:1@9': block 9 is outside 0..3"),
        ("study.arms=[attn]", "study.arms: 'attn' is not a layer spec; valid forms:"),
        ("study.arms=[all]", "study.arms entry 'all' is the full arm; valid: a layer spec"),
        ("study.arms=[none]", "study.arms entry 'none' is the base arm"),
        ("study.arms=[middle:2,1-2,middle:2]", "study.arms lists 'middle:2' and 'middle:2': both are arm"),
        ("++study.lr_per_arm={lora2:1e-4}", "study.lr_per_arm has key 'lora2', which names no arm; valid:"),
        ("++study.lr_per_arm={full:0}", "study.lr_per_arm['full']=0.0 must be > 0"),
        ("study.lora_lr_scale=0", "study.lora_lr_scale=0.0 must be > 0"),
        ("++study.memory_per_arm={blocks:4}", "study.memory_per_arm has key 'blocks', which names no arm"),
        ("++study.memory_per_arm={base:0}", "study.memory_per_arm['base']=0.0 must be > 0"),
    ],
)
def test_bad_arms_fail_with_one_line(override, expected, capsys, tmp_path):
    code = main(["sweep", *FAST, f"study.output_dir={tmp_path}", "study.layers=[0]", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err


def test_lora_arm_label_needs_a_valid_spec():
    with pytest.raises(ConfigError, match=r"^study.arms: 'lora:x' is not a LoRA spec"):
        arm_label("lora:x", 4)


class Recorder:
    """A stand-in for ``lamina.backend.train``: writes an eval.json per arm, records the configs."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg):
        self.calls.append(cfg)
        won = {"none": [0, 0, 0, 1], "all": [1, 1, 1, 0], "lora:1@all": [1, 1, 1, 1]}.get(
            cfg.layers if isinstance(cfg.layers, str) else "", [1, 1, 0, 0]
        )
        write_eval(Path(cfg.trainer.output_dir), won * 5)
        return cfg.trainer.output_dir


def test_mixed_arms_enter_the_table_and_the_plan(tmp_path):
    cfg = compose_sweep_config(
        [*FAST, "study.layers=[1]", "study.arms=[lora:1@all,middle:2]", f"study.output_dir={tmp_path}"]
    )
    recorder = Recorder()
    run_sweep(cfg, train_fn=recorder)
    assert [Path(c.trainer.output_dir).name for c in recorder.calls] == [
        "base-seed0", "full-seed0", "block01-seed0", "lora1@all-seed0", "middle2-seed0",
    ]  # fmt: skip
    plan = {row["arm"]: row for row in json.loads((tmp_path / "arms.json").read_text())}
    # By hand: a tiny block's linear layers are q, o (64x64), k, v (64->32), gate, up, down (64<->128).
    linear = [(64, 64), (64, 32), (64, 32), (64, 64), (64, 128), (64, 128), (128, 64)]
    assert plan["lora1@all-seed0"]["trainable_parameters"] == 4 * sum(i + o for i, o in linear) == 4096
    block = sum(i * o for i, o in linear) + 2 * 64  # the weights and the block's two norms
    assert plan["block01-seed0"]["trainable_parameters"] == block
    assert plan["middle2-seed0"]["trainable_parameters"] == 2 * block
    assert plan["base-seed0"]["trainable_parameters"] == 0
    assert plan["lora1@all-seed0"]["lr"] == pytest.approx(10 * cfg.trainer.lr)
    assert plan["middle2-seed0"]["layers"] == "middle:2"
    lines = (tmp_path / "contribution.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["block", "base", "full", "1", "lora1@all", "middle2"]
    markdown = (tmp_path / "contribution.md").read_text()
    assert "| lora1@all |" in markdown and "Best single block: 1" in markdown  # extra arms are not blocks
    # study.overwrite=true removes the extra arms' folders too.
    run_sweep(
        compose_sweep_config(
            [*FAST, "study.layers=[1]", f"study.output_dir={tmp_path}", "study.overwrite=true"]
        ),
        train_fn=Recorder(),
    )
    assert not (tmp_path / "lora1@all-seed0").exists() and not (tmp_path / "middle2-seed0").exists()


def test_tiny_sweep_with_a_lora_arm_end_to_end(tmp_path):
    """Base, full, block 1 and rank-1 LoRA on every block, trained for real on the tiny model."""
    cfg = compose_sweep_config(
        [
            *FAST,
            "trainer.iterations=1",
            "study.layers=[1]",
            "study.arms=[lora:1@all]",
            f"study.output_dir={tmp_path}",
        ]
    )
    run_sweep(cfg)
    arm = tmp_path / "lora1@all-seed0"
    state = json.loads(next((arm / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["lora"] == {"rank": 1, "alpha": 32} and state["trainable_parameters"] == 4096
    assert all(".lora_" in name for name in state["trainable"])
    run = OmegaConf.load(arm / "config.yaml")
    assert run.layers == "lora:1@all" and run.trainer.lr == pytest.approx(10 * cfg.trainer.lr)
    for name in ("contribution.csv", "contribution.md", "contribution.png", "summary.json", "arms.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = {line.split(",")[0]: line for line in (tmp_path / "contribution.csv").read_text().splitlines()}
    assert set(rows) == {"block", "base", "full", "1", "lora1@all"}


def test_memory_per_arm_by_kind_block_and_spec():
    cfg = compose_sweep_config(
        [
            *FAST,
            "study.layers=[0,2]",
            "study.arms=[lora:1@all,middle:2]",
            "++study.memory_per_arm={base:1.5,full:14,block:9,2:3,lora1@all:15}",
        ]
    )
    arms = study_arms(cfg.study, [0, 2], 4, cfg.trainer.lr)
    memory = {a.name(4): arm_memory_gib(cfg.study, a) for a in arms}
    assert memory == {
        "base-seed0": 1.5, "full-seed0": 14, "block00-seed0": 9, "block02-seed0": 3,  # "2" beats "block"
        "lora1@all-seed0": 15, "middle2-seed0": 0,  # no entry: no reservation
    }  # fmt: skip
    cfg.study.memory_per_arm = {"default": 6.0, "full": 14.0}
    assert [arm_memory_gib(cfg.study, a) for a in arms] == [6, 14, 6, 6, 6, 6]
