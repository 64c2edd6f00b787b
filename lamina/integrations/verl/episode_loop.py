"""The whole-history form for verl's own agent loop: one lamina episode as one growing sequence.

verl's ``AgentLoopBase`` turns one dataset row into one trajectory. ``EpisodeAgentLoop`` plays one
lamina environment episode that way: the chat starts with the task, observation and admissible
actions, and grows by one assistant turn (the model's answer, ``response_mask`` 1) and one user
turn (the next observation, ``response_mask`` 0, as verl masks tool responses) per step, with
verl's Continuous Token helpers (``ct_build_initial_tokens``, ``ct_merge_assistant_token``,
``ct_merge_context_msg``) so the tokens are exactly what the server saw. The episode return
(invalid-action penalties included) is the row's ``reward_score``, so verl's own ``fit`` and GRPO
work unchanged; GiGPO's per-step rows need lamina's per-step trainer (``trainer.py``) instead.

Use it from verl's config (no lamina trainer involved):

    actor_rollout_ref.rollout.agent.default_agent_loop=lamina_episode
    actor_rollout_ref.rollout.agent.agent_loop_config_path=<the file agent_loop_config_file(folder) writes>

Each dataset row gives the task seed in ``extra_info.seed`` (else its ``index``); the environment
and prompt settings come from the config's ``lamina`` section (``config.lamina_section``).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from lamina.agents.parsing import parse_step_action
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.envs.registry import make
from lamina.integrations.verl.config import plain_dict


def observation_message(observation: str, admissible: list[str] | None, step: int, max_steps: int) -> str:
    """The user turn after a step: the new observation and what may be done next."""
    lines = [f"Step {step + 1} of at most {max_steps}. Observation:", observation]
    if admissible is not None:
        lines.append("Admissible actions: " + ", ".join(f"'{a}'" for a in admissible))
    return "\n".join(lines)


@register("lamina_episode")
class EpisodeAgentLoop(AgentLoopBase):
    """One lamina episode per dataset row, as one growing chat (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.response_length = int(self.rollout_config.response_length)
        lamina = self.config.lamina
        self.env_name = str(lamina.env.name)
        self.env_kwargs = plain_dict(lamina.env.kwargs)
        self.max_steps = int(lamina.env.max_steps)
        self.prompt_cfg = PromptConfig(**plain_dict(lamina.agent))
        self.invalid_penalty = float(lamina.rollout.invalid_penalty)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        extra = dict(kwargs.get("extra_info") or {})
        seed = int(extra.get("seed", kwargs.get("index", 0)))
        env = await asyncio.to_thread(
            make, self.env_name, max_episode_steps=self.max_steps, **self.env_kwargs
        )
        try:
            return await self._play(env, seed, sampling_params)
        finally:
            env.close()

    async def _play(self, env, seed: int, sampling_params: dict[str, Any]) -> AgentLoopOutput:
        observation, info = await asyncio.to_thread(env.reset, seed=seed)
        # the first turn is lamina's per-step prompt without history (the chat itself is the history)
        first = build_messages(
            PromptConfig(**{**vars(self.prompt_cfg), "history": 0}),
            EpisodeMemory(task=info["task"]),
            observation,
            info["admissible_actions"],
            0,
            self.max_steps,
        )
        messages = list(first)
        runtime = await self.ct_build_initial_tokens(messages)
        mask: list[int] = []
        logprobs: list[float] = []
        episode_return, steps, won, request_id = 0.0, 0, False, uuid4().hex
        for step in range(self.max_steps):
            output = await self.server_manager.generate(
                request_id=request_id, prompt_ids=runtime, sampling_params=dict(sampling_params)
            )
            merged, mask, merged_logprobs = await self.ct_merge_assistant_token(
                runtime,
                output.token_ids,
                mask,
                logprobs if (logprobs or output.log_probs) else None,
                assistant_logprobs=output.log_probs or None,
            )
            runtime, logprobs = merged.token_ids, list(merged_logprobs or [])
            # verl annotates the tokenizer as the AutoTokenizer factory class; it holds a real tokenizer.
            text = cast(Any, self.tokenizer).decode(output.token_ids, skip_special_tokens=True)
            parsed = parse_step_action(text, info)
            observation, reward, terminated, truncated, info = await asyncio.to_thread(
                env.step, parsed.action
            )
            valid = parsed.valid and bool(info.get("action_valid", True))
            episode_return += float(reward) - (0.0 if valid else self.invalid_penalty)
            steps, won = step + 1, bool(info.get("won", False))
            if terminated or truncated or len(mask) >= self.response_length:
                break
            messages.append({"role": "assistant", "content": text})
            previous = list(messages)
            content = observation_message(observation, info["admissible_actions"], step + 1, self.max_steps)
            messages.append({"role": "user", "content": content})
            merged, new_mask, merged_logprobs = await self.ct_merge_context_msg(
                previous, messages, runtime, mask, logprobs or None
            )
            if len(new_mask) >= self.response_length:
                break
            runtime, mask, logprobs = merged.token_ids, new_mask, list(merged_logprobs or [])
        prompt_ids = runtime[: len(runtime) - len(mask)]
        response_ids = runtime[len(prompt_ids) :]
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[: self.response_length],
            response_mask=mask[: self.response_length],
            response_logprobs=logprobs[: self.response_length] if logprobs else None,
            reward_score=episode_return,
            num_turns=2 * steps + 1,
            metrics=AgentLoopMetrics(),
            extra_fields={"won": won, "episode_length": steps, "seed": seed},
        )


def agent_loop_config_file(folder) -> str:
    """Writes the file verl's ``agent.agent_loop_config_path`` reads, naming this loop; returns its path."""
    from pathlib import Path

    path = Path(folder) / "lamina_agent_loops.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"- name: lamina_episode\n  _target_: {__name__}.EpisodeAgentLoop\n")
    return str(path)
