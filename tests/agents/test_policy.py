"""The policy's recorded log-probs are those the training forward computes."""

from __future__ import annotations

import torch

from lamina.agents.policy import HFPolicy
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.trainer.update import pack_rows, response_log_probs


def test_generation_log_probs_match_training_forward(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    policy = HFPolicy(model, tokenizer, max_new_tokens=6, micro_batch_size=4)
    cfg = PromptConfig()
    prompts = [
        policy.encode(
            build_messages(cfg, EpisodeMemory(task="find the key" * (i + 1)), "A room.", ["look"], 0, 5)
        )
        for i in range(3)
    ]
    assert len({len(p) for p in prompts}) == 3  # different lengths exercise left padding
    torch.manual_seed(0)
    gens = policy.generate(prompts, temperature=0.7)
    rows = pack_rows(
        [torch.tensor(p) for p in prompts], [g.response_ids for g in gens], tokenizer.pad_token_id
    )
    with torch.no_grad():
        log_probs, _ = response_log_probs(model, rows, temperature=0.7)
    for i, g in enumerate(gens):
        assert len(g.response_ids) >= 1
        torch.testing.assert_close(log_probs[i, : len(g.response_ids)], g.log_probs, atol=2e-4, rtol=0)


def test_prompt_shows_history_and_step_counter():
    cfg = PromptConfig(history=2)
    memory = EpisodeMemory(task="eat the apple", steps=[("o1", "a1"), ("o2", "a2"), ("o3", "a3")])
    user = build_messages(cfg, memory, "now", ["eat apple"], 3, 10)[1]["content"]
    assert "o1" not in user and "[Step 2] Observation: o2" in user and "[Step 3] Action: a3" in user
    assert "Step 4 of at most 10" in user and "'eat apple'" in user and "<action>" in user
    assert "<think>" not in user
    assert "<think>" in build_messages(PromptConfig(think=True), memory, "now", None, 0, 10)[1]["content"]
