"""End to end: a 2-iteration run of the tiny random model writes every output; bad overrides fail cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lamina.cli import compose_config, main
from lamina.trainer.train import train

FAST = [
    "model=tiny-random",
    "rollout.group_size=2",
    "rollout.batch_size=2",
    "rollout.max_new_tokens=8",
    "env.max_steps=3",
    "env.train_tasks=2",
    "eval.episodes=2",
    "trainer.progress=false",
    "layers=[2]",
]


def test_two_iteration_run_writes_outputs(tmp_path):
    cfg = compose_config([*FAST, "trainer.iterations=2", f"trainer.output_dir={tmp_path}"])
    out = train(cfg)
    assert (out / "config.yaml").read_text().count("tiny-random") == 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    for r in records:
        assert {
            "success_rate",
            "mean_return",
            "invalid_action_rate",
            "loss",
            "kl",
            "rollout_s",
            "update_s",
        } <= set(r)
        assert 0 <= r["success_rate"] <= 1 and 0 <= r["invalid_action_rate"] <= 1
        assert r["rows"] >= 4  # 2 tasks x 2 copies, at least one step each
    ckpt = out / "checkpoints" / "iter_000002"
    tensors = load_file(str(ckpt / "trainable.safetensors"))
    assert tensors and all(name.startswith("model.layers.2.") for name in tensors)
    state = json.loads((ckpt / "state.json").read_text())
    assert state["iteration"] == 1 and state["blocks"] == [2]
    result = json.loads((out / "eval.json").read_text())
    assert (
        result["episodes"] == 2 and 0 <= result["ci95"][0] <= result["success_rate"] <= result["ci95"][1] <= 1
    )


def test_resume_continues_from_newest_checkpoint(tmp_path):
    base = [*FAST, f"trainer.output_dir={tmp_path}", "eval.episodes=0", "trainer.save_every=1"]
    train(compose_config([*base, "trainer.iterations=1"]))
    first = load_file(str(tmp_path / "checkpoints" / "iter_000001" / "trainable.safetensors"))
    train(compose_config([*base, "trainer.iterations=2", "trainer.resume=true"]))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    second = load_file(str(tmp_path / "checkpoints" / "iter_000002" / "trainable.safetensors"))
    assert set(first) == set(second)
    state = json.loads((tmp_path / "checkpoints" / "iter_000002" / "state.json").read_text())
    assert state["iteration"] == 1
    optimizer = torch.load(tmp_path / "checkpoints" / "iter_000002" / "optimizer.pt", weights_only=False)
    # AdamW counted two steps: the resumed run continued the optimizer state of the first one.
    assert all(int(s["step"]) == 2 for s in optimizer["state"].values())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("env=zork", "unknown env 'zork'; valid: "),
        ("layers=[99]", "block 99 is outside 0..29 (the model has L=30 blocks)"),
        ("rollout.group_size=1", "rollout.group_size=1: algorithm 'grpo'"),
        ("algorithm=ppo2", "unknown algorithm 'ppo2'; valid: "),
        ("trainer.iterationz=3", "did you mean trainer.iterations?"),
        ("model.path=/nonexistent/model", "model.path='/nonexistent/model' is neither a model folder"),
        ("agent.mode=guess", "agent.mode='guess'; valid: generate, choose"),
        ("trainer.lr=-1", "trainer.lr=-1.0 must be > 0"),
        ("trainer.iterations=-1", "trainer.iterations=-1 must be >= 0 (0: evaluate only)"),
        ("rollout.group_size=abc", "rollout.group_size=abc: not an integer"),
        (
            "trainer.iteratons=2",
            "unknown key 'trainer.iteratons' (trainer.iteratons=2); did you mean trainer.iterations?",
        ),
        ("env=qa", "env.kwargs.path is not set; env=qa needs it"),
    ],
)
def test_bad_overrides_fail_with_one_line(override, expected, capsys, tmp_path):
    assert main(["train", override, f"trainer.output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_console_script_lists_envs():
    result = subprocess.run(
        [sys.executable, "-m", "lamina.cli", "envs"], capture_output=True, text=True, check=True
    )
    assert "lamina/TextWorld-v0" in result.stdout and "textworld" in result.stdout


@pytest.mark.parametrize("algorithm", ["gigpo", "dr_grpo", "rloo"])
def test_each_algorithm_runs_end_to_end(algorithm, tmp_path):
    cfg = compose_config(
        [
            *FAST,
            f"algorithm={algorithm}",
            "trainer.iterations=1",
            "eval.episodes=0",
            f"trainer.output_dir={tmp_path}",
        ]
    )
    assert cfg.algorithm.estimator == {"dr_grpo": "grpo"}.get(algorithm, algorithm)
    train(cfg)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < record["anchor_mean_cluster_size"] and 0 <= record["anchor_shared_fraction"] <= 1


@pytest.mark.parametrize("env", ["alfworld", "webshop", "sokoban"])
def test_each_environment_trains_end_to_end(env, tmp_path):
    extra = []
    if env == "alfworld":
        from conftest import shared_path

        data = shared_path("alfworld", "json_2.1.1")
        extra = [f"env.kwargs.data_path={data}", "env.kwargs.task_types=[pick_and_place_simple]"]
    cfg = compose_config(
        [
            *FAST,
            f"env={env}",
            "env.train_tasks=null",
            "env.max_steps=2",
            "rollout.batch_size=1",
            "trainer.iterations=1",
            "eval.episodes=1",
            f"trainer.output_dir={tmp_path}",
            *extra,
        ]
    )
    train(cfg)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["rows"] >= 2
    assert json.loads((tmp_path / "eval.json").read_text())["episodes"] == 1


def test_choose_mode_with_gigpo_updates_the_block(tmp_path):
    """Choose mode: every action is valid. On Sokoban a random walk revisits states at different
    steps, so GiGPO's step advantages are non-zero and the chosen block really gets a gradient."""
    cfg = compose_config(
        [
            *FAST,
            "agent.mode=choose",
            "env=sokoban",
            "algorithm=gigpo",
            "env.max_steps=4",
            "rollout.group_size=4",
            "trainer.iterations=1",
            "eval.episodes=0",
            f"trainer.output_dir={tmp_path}",
        ]
    )
    train(cfg)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["invalid_action_rate"] == 0.0 and record["grad_norm"] > 0
    assert record["anchor_shared_fraction"] > 0
    assert record["mean_response_tokens"] < 10  # "<action>up</action>" + EOS, not free text


def test_choose_mode_refuses_open_action_spaces(tmp_path):
    cfg = compose_config(
        [
            *FAST,
            "agent.mode=choose",
            "env=arithmetic",
            "trainer.iterations=1",
            "eval.episodes=0",
            f"trainer.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(ValueError, match="agent.mode=generate"):
        train(cfg)
