"""``lamina eval``, held-out task sets, per-command help and one-line config errors."""

from __future__ import annotations

import json

import pytest

from lamina.cli import compose_config, main
from lamina.envs.seeds import task_seeds
from lamina.trainer.train import train

TINY = [
    "model=tiny-random",
    "env=sokoban",
    "env.max_steps=3",
    "rollout.group_size=2",
    "rollout.batch_size=2",
    "trainer.progress=false",
    "layers=[2]",
]
EVAL_KEYS = {
    "success_rate",
    "ci95",
    "episodes",
    "mean_return",
    "invalid_action_rate",
    "mean_length",
    "by_type",
    "seeds",
    "won",
    "returns",
    "lengths",
    "task_types",
}


def test_eval_of_a_run_and_of_the_base_model(tmp_path, capsys):
    run = train(
        compose_config(
            [*TINY, "trainer.iterations=1", "eval.episodes=0", f"trainer.output_dir={tmp_path}/run"]
        )
    )
    assert main(["eval", f"checkpoint={run}", "eval.episodes=3", f"out={tmp_path}/ev"]) == 0
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert EVAL_KEYS <= set(result) and result["episodes"] == 3 and len(result["won"]) == 3
    assert result["seeds"] == [100000, 100001, 100002]  # the held-out seeds, never trained on
    assert all(1 <= n <= 3 for n in result["lengths"])
    assert result["by_type"]["sokoban"]["episodes"] == 3
    printed = capsys.readouterr().out
    assert "| all | 3 |" in printed and "95% CI" in printed
    assert main(["eval", *TINY, "eval.episodes=2", "eval.temperature=0", f"out={tmp_path}/base"]) == 0
    base = json.loads((tmp_path / "base" / "eval.json").read_text())
    assert base["episodes"] == 2 and base["temperature"] == 0.0
    assert main(["eval", f"checkpoint={tmp_path}/nothing"]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_eval_without_a_terminal_prints_a_line_per_chunk(tmp_path, capsys):
    """An hour-long ALFWorld evaluation must show progress in a log file: one line per chunk of
    ``rollout.batch_size * rollout.group_size`` episodes, and no training bar."""
    args = [*TINY, "trainer.progress=true", "eval.episodes=5", f"out={tmp_path}/base"]
    assert main(["eval", *args]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "episodes," in line]
    assert [line.split(": ")[-1].split(" episodes")[0] for line in lines] == ["4/5", "5/5"]
    assert all(line.startswith("eval (base model") for line in lines)


def test_alfworld_eval_breaks_down_by_task_type(tmp_path):
    from conftest import shared_path

    data = shared_path("alfworld", "json_2.1.1")
    overrides = [
        "model=tiny-random",
        "env=alfworld",
        f"env.kwargs.data_path={data}",
        "env.max_steps=1",
        "eval.episodes=6",
        "rollout.batch_size=3",
        "rollout.group_size=2",
        f"out={tmp_path}",
    ]
    assert main(["eval", *overrides]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    kinds = set(result["by_type"])
    assert kinds and kinds <= {
        "pick_and_place_simple",
        "look_at_obj_in_light",
        "pick_clean_then_place_in_recep",
        "pick_heat_then_place_in_recep",
        "pick_cool_then_place_in_recep",
        "pick_two_obj_and_place",
    }
    assert sum(row["episodes"] for row in result["by_type"].values()) == 6


@pytest.mark.parametrize("env", ["textworld", "sokoban", "frozenlake", "countdown", "arithmetic"])
def test_training_seeds_never_reach_the_held_out_ones(env):
    cfg = compose_config([f"env={env}", "rollout.batch_size=8"])
    assert not cfg.env.eval_kwargs  # held out by seed
    seeds = {
        s for it in range(200) for s in task_seeds(cfg.env, cfg.trainer.seed, it, cfg.rollout.batch_size)
    }
    assert max(seeds) < cfg.env.eval_seed_offset


def test_alfworld_train_and_held_out_games_are_disjoint():
    from conftest import shared_path

    from lamina.envs.alfworld import ALFWorldEnv

    data = shared_path("alfworld", "json_2.1.1")
    cfg = compose_config(["env=alfworld"])
    train_env = ALFWorldEnv(**{**cfg.env.kwargs, "data_path": str(data)})
    held_out = ALFWorldEnv(**{**cfg.env.kwargs, **cfg.env.eval_kwargs, "data_path": str(data)})
    train_games, eval_games = set(train_env._task_types), set(held_out._task_types)
    assert train_games and eval_games and not train_games & eval_games


def test_overlapping_seed_ranges_are_refused(capsys, tmp_path):
    assert main(["train", "env=sokoban", "env.train_tasks=200000", f"trainer.output_dir={tmp_path}/r"]) == 2
    assert "overlap the held-out seeds" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "play", "sft", "sweep"])
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lamina {command}")
    if command in ("train", "eval", "sft", "sweep"):
        assert "env " in out and "trainer.iterations=" in out


def test_train_ends_with_base_and_trained_success(tmp_path, capsys):
    args = [*TINY, "trainer.iterations=1", "eval.episodes=2", f"trainer.output_dir={tmp_path}"]
    assert main(["train", *args]) == 0
    out = capsys.readouterr().out
    assert "held-out success: base " in out and "-> trained " in out and "95% CI" in out
    assert "eval_base.json" in out and "curves.png" in out
