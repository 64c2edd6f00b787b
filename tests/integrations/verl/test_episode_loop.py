"""verl's whole-history agent loop over a lamina environment (``EpisodeAgentLoop``), against the
HF-backed server client: one growing sequence per episode, the model's turns unmasked, the
environment's turns masked, the episode return (penalties included) as the row's reward."""

from __future__ import annotations

import asyncio

import pytest
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry
from verl_cpu import ActionFirstClient, first_admissible

from lamina.integrations.verl.config import VerlBackendConfig, compose_verl_config
from lamina.integrations.verl.episode_loop import EpisodeAgentLoop, agent_loop_config_file
from lamina.trainer.config import RunConfig


@pytest.mark.slow
def test_one_textworld_episode_as_one_sequence(tiny_model_and_tokenizer, tmp_path):
    model, tokenizer = tiny_model_and_tokenizer
    cfg = RunConfig()
    cfg.env.name, cfg.env.max_steps = "textworld", 3
    cfg.env.kwargs = {"challenge": "tw-treasure_hunter", "settings": {"level": 1}}
    cfg.agent.mode, cfg.agent.max_observation_chars = "generate", 300
    config = compose_verl_config(
        cfg, VerlBackendConfig(max_prompt_length=2048, max_response_length=1024), "/x"
    )
    client = ActionFirstClient(model, tokenizer, first_admissible)

    async def play():
        loop = EpisodeAgentLoop(
            trainer_config=DictConfigWrap(config),
            server_manager=client,
            tokenizer=tokenizer,
            processor=None,
            dataset_cls=None,
            data_config=DictConfigWrap(config.data),
        )
        return await loop.run({"temperature": 1.0, "max_tokens": 6}, extra_info={"seed": 0})

    out = asyncio.run(play())
    steps = out.extra_fields["episode_length"]
    assert 1 <= steps <= 3 and out.num_turns == 2 * steps + 1 and len(client.requests) == steps
    # every request continued the same sequence: each prompt extends the previous one
    prompts = [p for _, p, _ in client.requests]
    assert all(b[: len(a)] == a for a, b in zip(prompts, prompts[1:], strict=False))
    assert out.prompt_ids == prompts[0]
    assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
    generated = sum(out.response_mask)
    assert generated >= steps and (steps == 1 or 0 in out.response_mask)  # env turns are masked
    assert "Your task:" in tokenizer.decode(out.prompt_ids)
    assert out.reward_score <= 10.0 and out.reward_score >= -0.1 * steps - 1e-9
    path = agent_loop_config_file(tmp_path)
    assert "lamina_episode" in _agent_loop_registry and "EpisodeAgentLoop" in open(path).read()
