"""LoRA as a layer selection: only the adapters train, resume is exact, export merges them."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_exact import EXACT, TIMING_KEYS
from transformers import AutoModelForCausalLM

from lamina.agents.models import ModelConfig, load_model
from lamina.agents.prefix import prefix_start
from lamina.cli import compose_config
from lamina.commands.export import export_checkpoint
from lamina.errors import ConfigError
from lamina.study.weights import weight_change
from lamina.trainer import train as train_module
from lamina.trainer.checkpoint import load_checkpoint
from lamina.trainer.layers import parse_layers, split_lora
from lamina.trainer.lora import LoraSpec, base_name, inject_lora, is_lora_name, lora_targets
from lamina.trainer.train import train
from lamina.trainer.validation import validate

# test_exact's settings (choose mode, 2 PPO epochs of shuffled mini-batches, a KL reference), with
# rank-2 adapters on blocks 1-2 in place of its plain selection: block 0 stays a frozen prefix.
LORA_RUN = [
    *(o for o in EXACT if not o.startswith("layers=")),
    "agent.mode=choose",
    "layers=lora:2@1-2",
]


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _linear_sizes(model, blocks):
    """(in, out) of every nn.Linear in the blocks, by hand from the module tree."""
    return [
        (m.in_features, m.out_features)
        for b in blocks
        for m in model.model.layers[b].modules()
        if isinstance(m, torch.nn.Linear)
    ]


@pytest.mark.parametrize(
    "spec, rank, blocks",
    [
        ("lora:1@all", 1, [0, 1, 2, 3]),
        ("lora:4", 4, [0, 1, 2, 3]),
        ("lora:8@2", 8, [2]),
        ("lora:2@1-2", 2, [1, 2]),
        ("lora:2@middle:2", 2, [1, 2]),
        ("lora:3@[0, 3]", 3, [0, 3]),
    ],
)
def test_lora_specs_parse(spec, rank, blocks):
    assert split_lora(spec)[0] == rank
    assert parse_layers(spec, 4) == blocks


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lora:0@all", r"layers='lora:0@all' is not a LoRA spec; valid forms: 'lora:R'.*R >= 1$"),
        ("lora:r@all", r"layers='lora:r@all' is not a LoRA spec; valid forms"),
        ("lora:1@", r"layers='lora:1@' is not a LoRA spec"),
        ("lora:1@lora:2", r"layers='lora:1@lora:2' is not a LoRA spec"),
        ("lora:1@9", r"layers='lora:1@9': block 9 is outside 0..3 \(the model has L=4 blocks\)"),
        ("lora:1@top", r"layers='lora:1@top' is not a layer spec; valid forms: .*'lora:R@<blocks>'"),
    ],
)
def test_bad_lora_specs_fail_in_one_line(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_layers(spec, 4)
    assert "\n" not in str(err.value)


def test_adapters_cover_the_chosen_linear_layers(tiny_model):
    expected = sum(3 * (i + o) for i, o in _linear_sizes(tiny_model, [1, 3]))  # before injection
    names = inject_lora(tiny_model, LoraSpec(rank=3, blocks=[1, 3]), modules="all")
    assert names and all(is_lora_name(n) for n in names)
    assert {int(n.split(".")[2]) for n in names} == {1, 3}
    params = dict(tiny_model.named_parameters())
    assert sum(params[n].numel() for n in names) == expected
    # B starts at zero: the adapted model computes the base model.
    assert all(torch.count_nonzero(params[n]) == 0 for n in names if ".lora_B." in n)


def test_modules_narrow_the_adapted_layers(tiny_model):
    attn = lora_targets(tiny_model, [2], "attn")
    assert attn == [f"model.layers.2.self_attn.{p}_proj" for p in "qkvo"]
    assert lora_targets(tiny_model, [2], "mlp") == [
        f"model.layers.2.mlp.{p}_proj" for p in ("gate", "up", "down")
    ]
    with pytest.raises(ValueError, match=r"modules='norm': blocks \[2\] hold no nn.Linear layer"):
        inject_lora(tiny_model, LoraSpec(rank=1, blocks=[2]), modules="norm")


def test_lora_of_no_block_is_refused(tmp_path):
    cfg = compose_config([*LORA_RUN, "layers=lora:1@none", f"trainer.output_dir={tmp_path}"])
    validate(cfg)  # the spec is well formed; it selects nothing to adapt
    with pytest.raises(ConfigError, match=r"blocks \[\] hold no nn.Linear layer"):
        train(cfg)


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """One 3-iteration LoRA run (its learner kept) and one run of 2 iterations resumed to 3."""
    root = tmp_path_factory.mktemp("lora")
    whole, split = root / "whole", root / "split"
    learners = []
    build = train_module.build_learner

    def keep(cfg, blocks):
        learners.append(build(cfg, blocks))
        return learners[-1]

    train_module.build_learner = keep
    try:
        train(compose_config([*LORA_RUN, "trainer.iterations=3", f"trainer.output_dir={whole}"]))
    finally:
        train_module.build_learner = build
    train(compose_config([*LORA_RUN, "trainer.iterations=2", f"trainer.output_dir={split}"]))
    train(
        compose_config(
            [*LORA_RUN, "trainer.iterations=3", "trainer.resume=true", f"trainer.output_dir={split}"]
        )
    )
    return whole, split, learners[0]


def test_only_the_adapters_train(lora_runs):
    whole, _, learner = lora_runs
    assert learner.names and all(is_lora_name(n) for n in learner.names)
    assert [n for n, p in learner.model.named_parameters() if p.requires_grad] == learner.names
    base, _ = load_model(ModelConfig(name="tiny-random"))
    start = dict(base.named_parameters())
    frozen = [(n, p) for n, p in learner.model.named_parameters() if not is_lora_name(n)]
    assert {base_name(n) for n, _ in frozen} == set(start)
    assert all(torch.equal(p, start[base_name(n)]) for n, p in frozen)  # bit-identical
    tensors = load_file(str(whole / "checkpoints" / "iter_000003" / "trainable.safetensors"))
    assert sorted(tensors) == sorted(learner.names)
    assert any(torch.count_nonzero(tensors[n]) > 0 for n in tensors if ".lora_B." in n)  # it trained
    state = json.loads((whole / "checkpoints" / "iter_000003" / "state.json").read_text())
    assert state["lora"] == {"rank": 2, "alpha": 32}
    expected = sum(2 * (i + o) for i, o in _linear_sizes(base, [1, 2]))
    assert state["trainable_parameters"] == expected == 4096
    # The update starts at block 1: block 0, below the lowest adapter, is a frozen prefix.
    assert prefix_start(learner.model, learner.names) == 1
    assert learner.prefix is not None and learner.prefix.start == 1


def test_resumed_lora_run_equals_uninterrupted_run(lora_runs):
    whole, split, _ = lora_runs
    a = load_file(str(whole / "checkpoints" / "iter_000003" / "trainable.safetensors"))
    b = load_file(str(split / "checkpoints" / "iter_000003" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(whole) == _metrics(split)


def test_resume_refuses_another_rank(lora_runs, tmp_path):
    _, split, _ = lora_runs
    with pytest.raises(
        ConfigError,
        match=r"trainer.resume: .* trained LoRA of rank 2 but this run asks for layers='lora:1@1-2'",
    ):
        train(
            compose_config(
                [
                    *LORA_RUN,
                    "layers=lora:1@1-2",
                    "trainer.iterations=4",
                    "trainer.resume=true",
                    f"trainer.output_dir={split}",
                ]
            )
        )


def _moved_checkpoint(run):
    """The run's last checkpoint with its adapters moved well away from zero (a few tiny updates
    barely move them), its manifest kept valid."""
    ckpt = run / "checkpoints" / "iter_000003"
    tensors = load_file(str(ckpt / "trainable.safetensors"))
    generator = torch.Generator().manual_seed(0)
    moved = {n: t + 0.1 * torch.randn(t.shape, generator=generator) for n, t in tensors.items()}
    save_file(moved, str(ckpt / "trainable.safetensors"))
    digests = json.loads((ckpt / "manifest.json").read_text())
    digests["trainable.safetensors"] = hashlib.sha256(
        (ckpt / "trainable.safetensors").read_bytes()
    ).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(digests, indent=1))
    return ckpt


def test_export_merges_the_adapters(lora_runs, tmp_path):
    whole, _, _ = lora_runs
    ckpt = _moved_checkpoint(whole)
    adapted, _ = load_model(ModelConfig(name="tiny-random"))
    inject_lora(adapted, LoraSpec(rank=2, blocks=[1, 2]))
    load_checkpoint(ckpt, adapted)  # PEFT's adapters, computed unmerged
    out = export_checkpoint(whole, tmp_path / "exported")
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert not any(is_lora_name(n) or ".base_layer." in n for n, _ in exported.named_parameters())
    assert json.loads((out / "lamina_export.json").read_text())["merged_lora"] == {"rank": 2, "alpha": 32}
    base, _ = load_model(ModelConfig(name="tiny-random"))
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = adapted.eval()(ids).logits
        got = exported.eval()(ids).logits
        untrained = base.eval()(ids).logits
    assert (want - untrained).abs().max() > 1e-2  # the adapters change the output
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_weights_reports_the_merged_change_of_a_lora_run(lora_runs):
    whole, _, _ = lora_runs
    ckpt = _moved_checkpoint(whole)
    rows, num_blocks, _ = weight_change(whole)
    by_block = {r["block"]: r for r in rows}
    assert num_blocks == 4 and set(by_block) == {0, 1, 2, 3}
    assert by_block[0]["relative_change"] == by_block[3]["relative_change"] == 0.0
    merged, _ = load_model(ModelConfig(name="tiny-random"))
    load_checkpoint(ckpt, merged)  # a plain model: the adapters merged in
    base, _ = load_model(ModelConfig(name="tiny-random"))
    start, end = dict(base.named_parameters()), dict(merged.named_parameters())
    for block in (1, 2):
        names = [n for n in start if f".layers.{block}." in n]
        diff = sum(float((end[n] - start[n]).pow(2).sum()) for n in names)
        norm = sum(float(start[n].pow(2).sum()) for n in names)
        assert by_block[block]["relative_change"] == pytest.approx((diff / norm) ** 0.5, rel=1e-4)
        assert by_block[block]["relative_change"] > 1e-3 and by_block[block]["trained_tensors"] > 0


def test_verl_backend_refuses_lora_in_one_line():
    from lamina.integrations.verl.launch import validate as validate_verl

    cfg = compose_config(
        [
            "model=tiny-random",
            "backend=verl",
            "agent.mode=generate",
            "verl.mini_batches=1",
            "layers=lora:1@all",
        ]
    )
    with pytest.raises(
        ConfigError, match=r"^layers='lora:1@all': backend=verl cannot train LoRA adapters"
    ) as err:
        validate_verl(cfg)
    assert "\n" not in str(err.value)


def test_lora_sft_checkpoint_loads_merged(tmp_path):
    """``lamina sft layers=lora:R@...`` saves the adapters with their rank; a plain model loads them
    merged and reproduces the trained loss (the route of ``init_from`` and ``lamina eval``)."""
    from lamina.envs.runner import EnvGroupRunner
    from lamina.trainer.restore import load_trained_model
    from lamina.trainer.sft import (
        collect_expert_rows,
        compose_sft_config,
        expert_loss,
        expert_seeds,
        response_builder,
        sft,
    )

    out = tmp_path / "sft"
    cfg = compose_sft_config(
        [
            "model=tiny-random",
            "env=frozenlake",
            "env.max_steps=8",
            "trainer.progress=false",
            "agent.mode=generate",
        ]
        + [
            "layers=lora:4@all",
            "sft.episodes=2",
            "sft.epochs=2",
            "sft.lr=1e-2",
            "sft.batch_size=4",
            f"sft.output_dir={out}",
        ]
    )
    sft(cfg)
    summary = json.loads((out / "sft.json").read_text())
    state = json.loads(next((out / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["lora"] == {"rank": 4, "alpha": 32} and all(is_lora_name(n) for n in state["trainable"])
    assert summary["final_loss"] < summary["initial_loss"]
    model, tokenizer, _ = load_trained_model(out)
    assert not any(is_lora_name(n) for n, _ in model.named_parameters())
    respond, policy = response_builder(cfg.agent, model, tokenizer)
    with EnvGroupRunner("frozenlake", 2, num_workers=0, max_episode_steps=8) as runner:
        rows = collect_expert_rows(runner, expert_seeds(cfg), policy.encode, respond, cfg.agent, 8)
    loss = expert_loss(model, rows, tokenizer.pad_token_id, 4)
    assert loss == pytest.approx(summary["final_loss"], rel=1e-4)
