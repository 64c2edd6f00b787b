"""The trainer is exact: resume equals an uninterrupted run, and the review defects stay fixed."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from lamina.agents.logprobs import autocast_context, gather_log_probs
from lamina.agents.models import ModelConfig, load_model, model_num_blocks
from lamina.agents.policy import HFPolicy
from lamina.algorithms.losses import LossConfig
from lamina.cli import compose_config, main
from lamina.errors import ConfigError, TrainingStopped
from lamina.trainer import train as train_module
from lamina.trainer.checkpoint import load_checkpoint, save_checkpoint
from lamina.trainer.layers import apply_layer_selection, trainable_parameter_names
from lamina.trainer.precision import keep_fp32_master_weights
from lamina.trainer.rollout import single_step_batch
from lamina.trainer.train import train
from lamina.trainer.update import UpdateConfig, ppo_update
from lamina.trainer.validation import validate

# timings and memory vary run to run
TIMING_KEYS = {"rollout_s", "update_s", "rss_mb", "max_rss_mb", "peak_memory_mb"}
# FrozenLake in choose mode, 2 PPO epochs of shuffled mini-batches and a KL reference: every
# random generator and every piece of optimizer state a resume must bring back is in play.
EXACT = [
    "model=tiny-random",
    "env=frozenlake",
    "env.max_steps=3",
    "rollout.group_size=3",
    "rollout.batch_size=1",
    "trainer.update.ppo_epochs=2",
    "trainer.update.mini_batch_size=4",
    "trainer.lr=1e-2",
    "eval.episodes=0",
    "trainer.progress=false",
    "layers=[1,2]",
]


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.parametrize("mode", ["choose", "generate"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, mode):
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = [*EXACT, f"agent.mode={mode}", "rollout.max_new_tokens=6"]
    train(compose_config([*common, "trainer.iterations=4", f"trainer.output_dir={whole}"]))
    train(compose_config([*common, "trainer.iterations=2", f"trainer.output_dir={split}"]))
    # A crash after iteration 2's metrics row but before its checkpoint leaves a row to drop.
    with (split / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"iteration": 2, "loss": 123.0}) + "\n")
    train(
        compose_config(
            [*common, "trainer.iterations=4", "trainer.resume=true", f"trainer.output_dir={split}"]
        )
    )
    a = load_file(str(whole / "checkpoints" / "iter_000004" / "trainable.safetensors"))
    b = load_file(str(split / "checkpoints" / "iter_000004" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    initial = load_file(str(whole / "checkpoints" / "iter_000004" / "reference.safetensors"))
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # training really moved the weights
    assert _metrics(whole) == _metrics(split)
    assert [r["iteration"] for r in _metrics(split)] == [0, 1, 2, 3]


def test_resume_refuses_other_layers_or_learning_rate(tmp_path):
    base = [*EXACT, "trainer.iterations=1", f"trainer.output_dir={tmp_path}"]
    train(compose_config(base))
    resume = [*EXACT, "trainer.iterations=2", "trainer.resume=true", f"trainer.output_dir={tmp_path}"]
    with pytest.raises(ConfigError, match=r"selects blocks \[3\]"):
        train(compose_config([*resume, "layers=[3]"]))
    with pytest.raises(ConfigError, match="'lr': 0.01"):
        train(compose_config([*resume, "trainer.lr=1e-3"]))


def test_checkpoint_state_loads_without_pickle(tmp_path):
    train(compose_config([*EXACT, "trainer.iterations=1", f"trainer.output_dir={tmp_path}"]))
    ckpt = tmp_path / "checkpoints" / "iter_000001"
    assert {p.name for p in ckpt.iterdir()} == {
        "trainable.safetensors",
        "reference.safetensors",
        "rng.safetensors",
        "optimizer.pt",
        "state.json",
        "manifest.json",
    }
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    steps = {int(s["step"]) for s in state["state"].values()}
    assert len(steps) == 1 and steps.pop() >= 2  # 2 PPO epochs: at least two optimizer steps


class _RunsCode:
    """Unpickling this calls ``open(path, "w")``: what a tampered ``optimizer.pt`` could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_optimizer_state_is_loaded_without_running_pickled_code(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt = save_checkpoint(tmp_path, 0, model, ["weight"], optimizer, {})
    marker = tmp_path / "code_ran"
    torch.save({"state": _RunsCode(marker)}, ckpt / "optimizer.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(ckpt, model, optimizer)
    assert not marker.exists()


def test_model_folder_code_never_runs_unless_trusted(tmp_path):
    """A model folder whose config names its own Python code (``auto_map``): by default the
    standard Llama config is read and that code is never imported."""
    folder, marker = tmp_path / "custom_model", tmp_path / "code_ran"
    folder.mkdir()
    auto_map = {"AutoConfig": "custom.CustomConfig"}
    (folder / "config.json").write_text(
        json.dumps({"model_type": "llama", "num_hidden_layers": 3, "auto_map": auto_map})
    )
    (folder / "custom.py").write_text(
        f"import pathlib\n\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import LlamaConfig\n\n\nclass CustomConfig(LlamaConfig):\n    pass\n"
    )
    assert model_num_blocks(compose_config([f"model.path={folder}"]).model) == 3
    assert not marker.exists()


def test_model_weights_load_only_from_safetensors(tmp_path, tiny_model_and_tokenizer):
    """A model folder whose weights are only a pickled ``pytorch_model.bin`` is refused."""
    model, tokenizer = tiny_model_and_tokenizer
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="model.safetensors"):
        load_model(ModelConfig(path=str(tmp_path)))


def test_training_temperature_zero_is_refused(capsys, tmp_path):
    assert main(["train", "rollout.temperature=0", f"trainer.output_dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err
    assert "rollout.temperature=0.0" in err and "eval.temperature=0" in err
    validate_only = compose_config(["model=tiny-random", "eval.temperature=0"])
    validate(validate_only)  # greedy evaluation is fine


def test_device_and_dtype_are_validated():
    for override, expected in [
        ("trainer.device=tpu", "trainer.device='tpu'; valid: auto, cpu, cuda, cuda:N"),
        ("model.dtype=float8", "model.dtype='float8'; valid: auto, float32, bfloat16, float16"),
        ("agent.choose_score=max", "agent.choose_score='max'; valid: sum, mean"),
    ]:
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("[", r"\[")):
            validate(compose_config(["model=tiny-random", override]))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            validate(compose_config(["model=tiny-random", "trainer.device=cuda"]))


def _token_rows(tokenizer, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, 1000, (12 + i,), generator=gen) for i in range(n)]
    responses = [torch.randint(5, 1000, (3 + i,), generator=gen) for i in range(n)]
    return prompts, responses


def test_update_forward_has_no_dropout(tokenizer):
    """A GPT-2 with dropout 0.5: the first on-policy step is at ratio 1 only in eval mode."""
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.5,
        embd_pdrop=0.5,
        attn_pdrop=0.5,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    trainable = apply_layer_selection(model, trainable_parameter_names(model, [1]))
    policy = HFPolicy(model, tokenizer)
    prompts, responses = _token_rows(tokenizer)
    model.eval()
    with torch.no_grad():
        old, _, _ = policy.log_probs(prompts, responses, 1.0)
    old_rows = [old[i, : len(r)] for i, r in enumerate(responses)]
    model.train()  # whatever mode the caller left it in
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    metrics = ppo_update(
        policy,
        optimizer,
        trainable,
        single_step_batch(prompts, responses, old_rows),
        np.array([1.0, -1.0, 0.5, -0.5]),
        LossConfig(),
        UpdateConfig(),
        8,
        1.0,
    )
    assert abs(metrics["ppo_kl"]) < 1e-6 and metrics["pg_clipfrac"] == 0.0


def test_non_finite_step_is_skipped_and_counted(tiny_model, tokenizer):
    trainable = apply_layer_selection(tiny_model, trainable_parameter_names(tiny_model, [2]))
    before = [p.detach().clone() for p in trainable]
    policy = HFPolicy(tiny_model, tokenizer)
    prompts, responses = _token_rows(tokenizer)
    old = [torch.full((len(r),), -5.0) for r in responses]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    metrics = ppo_update(
        policy,
        optimizer,
        trainable,
        single_step_batch(prompts, responses, old),
        np.array([1.0, np.nan, 0.5, -0.5]),
        LossConfig(),
        UpdateConfig(),
        8,
        1.0,
    )
    assert metrics["skipped_steps"] == 1 and metrics["optimizer_steps"] == 0
    assert all(torch.equal(p, b) for p, b in zip(trainable, before, strict=True))
    assert not optimizer.state  # Adam's moments were not touched either


def test_run_stops_after_max_skipped_steps(tmp_path, monkeypatch):
    """From iteration 1 on every advantage is NaN: one skipped step per iteration (one PPO epoch,
    one mini-batch), so the third in a row stops the run during iteration 3."""
    real = train_module.compute_advantages
    seen = []

    def poisoned(cfg, batch):
        seen.append(1)
        advantages = real(cfg, batch)
        return advantages * np.nan if len(seen) > 1 else advantages

    monkeypatch.setattr(train_module, "compute_advantages", poisoned)
    one_step = ["trainer.update.ppo_epochs=1", "trainer.update.mini_batch_size=null"]
    cfg = compose_config(
        [*EXACT, *one_step, "trainer.iterations=6", "trainer.save_every=1", f"trainer.output_dir={tmp_path}"]
    )
    with pytest.raises(TrainingStopped, match=r"3 update steps in a row .*iter_000003"):
        train(cfg)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["iter_000001", "iter_000002", "iter_000003"]
    first = load_file(str(tmp_path / "checkpoints" / "iter_000001" / "trainable.safetensors"))
    last = load_file(str(tmp_path / "checkpoints" / "iter_000003" / "trainable.safetensors"))
    assert all(torch.equal(first[k], last[k]) and torch.isfinite(first[k]).all() for k in first)
    rows = _metrics(tmp_path)
    assert [r["skipped_steps"] for r in rows] == [0.0, 1.0, 1.0]  # iteration 3 stopped before its row


def test_non_finite_weights_never_reach_a_checkpoint(tmp_path, monkeypatch):
    """Iteration 1's update leaves a NaN in the trained weights (a fault the skipped-step check
    does not see): its checkpoint is refused and the run stops; iteration 0's stays the newest."""
    real = train_module.ppo_update
    calls = []

    def poisoned(policy, optimizer, trainable, *args, **kwargs):
        calls.append(1)
        result = real(policy, optimizer, trainable, *args, **kwargs)
        if len(calls) > 1:
            with torch.no_grad():
                trainable[0].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(train_module, "ppo_update", poisoned)
    cfg = compose_config(
        [*EXACT, "trainer.iterations=2", "trainer.save_every=1", f"trainer.output_dir={tmp_path}"]
    )
    with pytest.raises(TrainingStopped, match=r"iteration 2: the trained weights hold NaN .*iter_000001"):
        train(cfg)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_000001"]
    saved = load_file(str(tmp_path / "checkpoints" / "iter_000001" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_cli_reports_a_stopped_run_in_one_line(tmp_path, monkeypatch, capsys):
    def stop(*args, **kwargs):
        raise TrainingStopped("iteration 0: stopped for a test")

    monkeypatch.setattr(train_module, "train", stop)
    assert main(["train", "model=tiny-random", f"trainer.output_dir={tmp_path}"]) == 1
    assert capsys.readouterr().err.strip() == "lamina: stopped: iteration 0: stopped for a test"


def test_generation_ignores_the_model_generation_config(tiny_model, tokenizer):
    """A checkpoint's own repetition penalty / top-k must not change what is sampled without
    changing the recorded log-probs: sampling stays plain, the log-probs match a recomputation."""
    tiny_model.generation_config.repetition_penalty = 5.0
    tiny_model.generation_config.top_k = 3
    tiny_model.generation_config.no_repeat_ngram_size = 1
    policy = HFPolicy(tiny_model, tokenizer, max_new_tokens=8, stop_strings=())
    prompts, _ = _token_rows(tokenizer)
    torch.manual_seed(0)
    gens = policy.generate([p.tolist() for p in prompts], temperature=0.9)
    with torch.no_grad():
        lps, _, _ = policy.log_probs(prompts, [g.response_ids for g in gens], 0.9)
    for i, g in enumerate(gens):
        torch.testing.assert_close(lps[i, : len(g.response_ids)], g.log_probs, atol=2e-4, rtol=0)
    assert tiny_model.generation_config.repetition_penalty == 5.0  # the model's config is left as it was


def test_response_keeps_the_stop_token(tiny_model, tokenizer):
    """The end-of-text token that stops a response is part of it (its probability is trained)."""
    stop_id = tokenizer.pad_token_id  # <|endoftext|>: a stop token that is also the padding
    head = tiny_model.get_output_embeddings()
    calls = {"n": 0}

    def force_stop_on_third(module, args, out):
        calls["n"] += 1
        if calls["n"] == 3:
            out = out.clone()
            out[..., stop_id] += 1e4
        return out

    head.register_forward_hook(force_stop_on_third)
    policy = HFPolicy(tiny_model, tokenizer, max_new_tokens=8, stop_strings=())
    (gen,) = policy.generate([list(range(100, 110))], temperature=0.0)
    assert gen.response_ids.tolist()[-1] == stop_id and len(gen.response_ids) == 3
    assert policy.response_length([5, 6, stop_id, stop_id, stop_id]) == 3


def test_response_length_ends_at_the_stop_string(tokenizer, tiny_model):
    policy = HFPolicy(tiny_model, tokenizer)
    ids = tokenizer("<action>look</action>", add_special_tokens=False)["input_ids"]
    pad = tokenizer.pad_token_id
    assert policy.response_length(ids + [pad, pad]) == len(ids)
    assert policy.response_length(ids[:-1]) == len(ids) - 1  # cut by max_new_tokens


def test_chunked_log_probs_equal_full_log_softmax(tiny_model):
    hidden = torch.randn(3, 5, tiny_model.config.hidden_size, requires_grad=True)
    targets = torch.randint(0, tiny_model.config.vocab_size, (3, 5))
    lp, ent = gather_log_probs(tiny_model, hidden, targets, 0.8, with_entropy=True, chunk_tokens=4)
    logits = tiny_model.get_output_embeddings()(hidden).float() / 0.8
    full = torch.log_softmax(logits, -1)
    torch.testing.assert_close(lp, full.gather(-1, targets[..., None]).squeeze(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1), atol=1e-4, rtol=0)
    (g_chunked,) = torch.autograd.grad(lp.sum() + ent.sum(), hidden)
    (g_full,) = torch.autograd.grad(
        full.gather(-1, targets[..., None]).sum() - (full.exp() * full).sum(), hidden
    )
    torch.testing.assert_close(g_chunked, g_full, atol=1e-5, rtol=1e-4)


def test_bfloat16_run_keeps_fp32_master_weights(tmp_path):
    """model.dtype=bfloat16 end to end: the body stays bf16, the trained blocks are fp32."""
    out = train(
        compose_config(
            [*EXACT, "model.dtype=bfloat16", "trainer.iterations=1", f"trainer.output_dir={tmp_path}"]
        )
    )
    trained = load_file(str(out / "checkpoints" / "iter_000001" / "trainable.safetensors"))
    assert trained and all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in trained.values())


def _changed_fraction(master_weights: bool, tokenizer) -> float:
    model, _ = load_model(ModelConfig(name="tiny-random", dtype="bfloat16"))
    trainable = apply_layer_selection(model, trainable_parameter_names(model, [2]))
    if master_weights:
        assert keep_fp32_master_weights(model, trainable) == torch.bfloat16
    before = [p.detach().clone() for p in trainable]
    policy = HFPolicy(model, tokenizer)
    prompts, responses = _token_rows(tokenizer)
    with torch.no_grad(), autocast_context(model):
        old, _, _ = policy.log_probs(prompts, responses, 1.0)
    old_rows = [old[i, : len(r)].float() for i, r in enumerate(responses)]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    batch = single_step_batch(prompts, responses, old_rows)
    ppo_update(
        policy,
        optimizer,
        trainable,
        batch,
        np.array([1.0, -1.0, 0.5, -0.5]),
        LossConfig(),
        UpdateConfig(),
        8,
        1.0,
    )
    changed = sum(int((p.float() != b.float()).sum()) for p, b in zip(trainable, before, strict=True))
    return changed / sum(p.numel() for p in trainable)


def test_fp32_master_weights_keep_small_updates(tokenizer):
    """At lr 1e-5 an AdamW step (about 1e-5 per weight) is below half a bf16 ulp for most weights:
    in bf16 it rounds away, with fp32 master weights it lands."""
    with_master = _changed_fraction(True, tokenizer)
    plain_bf16 = _changed_fraction(False, tokenizer)
    assert with_master > 0.9 and plain_bf16 < 0.2
