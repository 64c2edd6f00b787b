"""lamina sft: expert rows use RL's prompts and the policy's response format; training lowers the loss
on the expert actions; the checkpoint loads (alone and under a later run's init_from chain)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import ModelConfig, load_model
from lamina.agents.prompt import EpisodeMemory, build_messages
from lamina.cli import main
from lamina.envs.runner import EnvGroupRunner
from lamina.trainer.checkpoint import save_checkpoint
from lamina.trainer.restore import load_init_from, load_trained_model
from lamina.trainer.sft import (
    collect_expert_rows,
    compose_sft_config,
    expert_loss,
    expert_seeds,
    response_builder,
    sft,
)

TINY = ["model=tiny-random", "env=frozenlake", "env.max_steps=8", "trainer.progress=false"]


@pytest.mark.parametrize("mode", ["generate", "choose"])
def test_expert_rows_use_rl_prompts_and_the_policy_format(mode, tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    cfg = compose_sft_config([*TINY, f"agent.mode={mode}"])
    respond, policy = response_builder(cfg.agent, model, tokenizer)
    with EnvGroupRunner("frozenlake", 2, num_workers=0, max_episode_steps=8) as runner:
        rows = collect_expert_rows(runner, [0, 1], policy.encode, respond, cfg.agent, 8)
        observations, infos = runner.reset([0, 1])
    assert rows.episode_won.tolist() == [True, True]  # the shortest-path expert solves its maps
    assert len(rows) == int(rows.episode_lengths.sum())
    # Row 0 is seed 0's first step: the prompt RL would build, the expert action in policy form.
    first = build_messages(
        cfg.agent, EpisodeMemory(infos[0]["task"]), observations[0], infos[0]["admissible_actions"], 0, 8
    )
    assert rows.prompt_ids[0].tolist() == policy.encode(first)
    action = rows.actions[0]
    assert action in infos[0]["admissible_actions"]
    text = tokenizer.decode(rows.response_ids[0])
    assert text == f"<action>{action}</action><|im_end|>"
    if mode == "choose":
        assert isinstance(policy, ChoicePolicy)
        assert rows.response_ids[0].tolist() == policy.continuation_ids([action])[0]
    # Rows are recorded in lock-step (seed 0 step 0, seed 1 step 0, seed 0 step 1, ...); later rows
    # carry the history of earlier (observation, action) pairs, as in RL.
    second = tokenizer.decode(rows.prompt_ids[2])
    assert f"[Step 1] Action: {action}" in second


def test_seeds_stay_on_training_tasks():
    cfg = compose_sft_config([*TINY, "sft.episodes=10", "env.train_tasks=4"])
    assert sorted(expert_seeds(cfg)) == [0, 1, 2, 3]
    seeds = expert_seeds(compose_sft_config([*TINY, "sft.episodes=5"]))
    assert len(set(seeds)) == 5 and all(0 <= s < 2**31 for s in seeds)


def test_sft_lowers_the_expert_loss_and_its_checkpoint_loads(tmp_path):
    out = tmp_path / "sft"
    cfg = compose_sft_config(
        [
            *TINY,
            "agent.mode=generate",
            "layers=all",
            "sft.episodes=4",
            "sft.epochs=4",
            "sft.lr=1e-2",
            "sft.batch_size=4",
            # A random 64-wide model moves its 49k-token output fastest through the (tied) head.
            "trainer.train_embeddings=true",
            "trainer.train_lm_head=true",
            f"sft.output_dir={out}",
        ]
    )
    assert sft(cfg) == out
    summary = json.loads((out / "sft.json").read_text())
    assert summary["episodes"] == 4 and summary["expert_success_rate"] == 1.0
    assert summary["initial_loss"] > 10 and summary["final_loss"] < 0.3 * summary["initial_loss"]
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3] and epochs[-1]["loss"] < epochs[0]["loss"]
    state = json.loads((out / "checkpoints" / "iter_000004" / "state.json").read_text())
    assert state["kind"] == "sft" and state["blocks"] == [0, 1, 2, 3]

    # The checkpoint, loaded into a fresh base model, reproduces the trained loss.
    model, tokenizer, _ = load_trained_model(out)
    respond, policy = response_builder(cfg.agent, model, tokenizer)
    with EnvGroupRunner("frozenlake", 4, num_workers=0, max_episode_steps=8) as runner:
        rows = collect_expert_rows(runner, expert_seeds(cfg), policy.encode, respond, cfg.agent, 8)
    assert len(rows) == summary["rows"]
    pad_id = tokenizer.pad_token_id
    assert expert_loss(model, rows, pad_id, 4) == pytest.approx(summary["final_loss"], rel=1e-4)

    # init_from: a run that starts from it gets the SFT tensors; a later run that trained one
    # block saved only that block, and restoring it loads the SFT tensors first.
    fresh, _ = load_model(ModelConfig(name="tiny-random"))
    load_init_from(out, fresh, ModelConfig(name="tiny-random", dtype="float32"))
    assert expert_loss(fresh, rows, pad_id, 4) == pytest.approx(summary["final_loss"], rel=1e-4)
    rl_run = tmp_path / "rl"
    rl_run.mkdir()
    config = OmegaConf.load(out / "config.yaml")
    config.init_from = str(out)
    (rl_run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    names = [n for n, _ in fresh.named_parameters() if n.startswith("model.layers.1.")]
    with torch.no_grad():
        for name in names:
            dict(fresh.named_parameters())[name].add_(0.01)
    save_checkpoint(rl_run, 0, fresh, names, torch.optim.AdamW([torch.zeros(1)]), {"blocks": [1]})
    restored, _, _ = load_trained_model(rl_run)
    for name, value in fresh.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name


def test_load_init_from_refuses_another_base_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml({"model": {"name": "smollm2-135m"}}))
    model, _ = load_model(ModelConfig(name="tiny-random"))
    save_checkpoint(run, 0, model, [], torch.optim.AdamW([torch.zeros(1)]), {})
    with pytest.raises(ValueError, match="trained model 'smollm2-135m', but this run trains 'tiny-random'"):
        load_init_from(run, model, ModelConfig(name="tiny-random"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("sft.episodes=0", "sft.episodes=0 must be >= 1"),
        ("sft.lr=-1", "sft.lr=-1.0 must be > 0"),
        ("layers=none", "layers='none' selects no block: SFT would train nothing"),
        ("env=zork", "unknown env 'zork'; valid: "),
        ("sft.epochz=2", "unknown key 'sft.epochz' (sft.epochz=2); did you mean sft.epochs?"),
    ],
)
def test_bad_sft_settings_fail_with_one_line(override, expected, capsys, tmp_path):
    assert main(["sft", *TINY, override, f"sft.output_dir={tmp_path}/out"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists()
