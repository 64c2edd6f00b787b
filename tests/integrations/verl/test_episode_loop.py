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


@pytest.mark.slow
def test_episodes_through_verls_agent_loop_worker(tmp_path):
    """verl's ``AgentLoopWorker.generate_sequences`` (the path verl's own ``fit`` takes) runs
    ``EpisodeAgentLoop`` from the loop file, with the ``raw_prompt`` column verl's post-processing
    reads, and returns verl's padded batch with the episode returns as ``rm_scores``."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl import DataProto
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl_cpu import save_tiny_llama

    folder = save_tiny_llama(tmp_path / "tiny", layers=1)
    cfg = RunConfig()
    cfg.env.name, cfg.env.max_steps = "frozenlake", 2
    cfg.agent.mode = "generate"
    loops = agent_loop_config_file(tmp_path)
    verl_cfg = VerlBackendConfig(
        max_prompt_length=512,
        max_response_length=96,
        overrides=[
            "actor_rollout_ref.rollout.agent.default_agent_loop=lamina_episode",
            f"actor_rollout_ref.rollout.agent.agent_loop_config_path={loops}",
            "actor_rollout_ref.rollout.calculate_log_probs=true",
        ],
    )
    config = compose_verl_config(cfg, verl_cfg, str(folder))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    client = ActionFirstClient(
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer, first_admissible
    )
    worker = AgentLoopWorker(config, client)
    seeds = [0, 0, 7]
    batch = DataProto.from_dict(
        non_tensors={
            "raw_prompt": np.array(
                [[{"role": "user", "content": f"frozenlake {s}"}] for s in seeds], dtype=object
            ),
            "extra_info": np.array([{"seed": s} for s in seeds], dtype=object),
            "index": np.arange(len(seeds)),
        }
    )
    out = asyncio.run(worker.generate_sequences(batch))
    assert len(out) == 3 and set(out.non_tensor_batch["seed"]) == {0, 7}
    # verl's post-processing copies raw_prompt (a KeyError without it); the loop itself builds its
    # prompt from the environment, not from the dataset row
    assert out.non_tensor_batch["raw_prompt"][2][0]["content"] == "frozenlake 7"
    data = out.batch
    assert data["responses"].shape == (3, 96) and data["prompts"].shape == (3, 512)
    lengths = out.non_tensor_batch["episode_length"]
    assert all(1 <= k <= 2 for k in lengths)
    assert len(client.requests) == sum(lengths)  # one server call per step, every episode
    # the model's turns are in the response mask, the environment's are not
    assert (data["response_mask"].sum(-1) >= torch.as_tensor(lengths.astype(int))).all()
    # the episode return sits on the last response token; rows with a 2nd step mask the observation
    scores = data["rm_scores"].sum(-1)
    assert torch.all(scores >= -0.1 * 2 - 1e-6) and torch.all(scores <= 1.0)
    assert "rollout_log_probs" in data.keys()
