"""The per-step rollout for verl: lamina environments stepped, verl's rollout servers asked per step.

verl's ``AgentLoopBase`` grows one sequence per episode. GiGPO as published trains one row per
(trajectory, step): a prompt rebuilt at every step from the task, the last H steps, the current
observation and the admissible actions (``lamina.agents.prompt.build_messages``), and the
response that step sampled. ``play_steps`` plays B tasks x G copies in lock-step: all active
episodes' prompts go to the rollout servers concurrently (``client.generate``, the interface of
verl's ``LLMServerClient``: vLLM/SGLang replicas on GPUs), environment calls run off the event loop
(``asyncio.to_thread``), and every step becomes one row. ``to_dataproto`` turns the rows into verl's
``DataProto`` with the keys verl's trainer reads and the ids GiGPO needs:

- tensors: ``prompts`` (N, P) left-padded, ``responses`` (N, R) right-padded, ``input_ids``,
  ``attention_mask``, ``position_ids`` (N, P + R), ``response_mask`` (N, R),
  ``rm_scores`` (N, R) with the step reward (invalid-action penalty included) on the last response
  token, ``rollout_log_probs`` (N, R) when the server returned log-probs;
- non-tensors, arrays of N objects: ``uid`` (the group: one task), ``traj_uid``, ``step_id``,
  ``anchor`` (the environment-state key), ``action_valid``.

    rows = asyncio.run(play_steps(client, tokenizer, runner, [3, 7], 8, max_steps=50, ...))
    batch = to_dataproto(rows, tokenizer.pad_token_id, max_prompt_length=2048, max_response_length=512)
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from lamina.agents.parsing import parse_step_action
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages


class GenerateClient(Protocol):
    """What ``play_steps`` needs from a server: verl's ``LLMServerClient.generate``.

    Returns an object with ``token_ids`` (list[int]) and ``log_probs`` (list[float] or None),
    as verl's ``TokenOutput``.
    """

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any]): ...


class EnvRunner(Protocol):
    """``lamina.envs.runner.EnvGroupRunner``'s interface."""

    num_envs: int

    def reset(self, seeds: Sequence[int]) -> tuple[list[str], list[dict]]: ...

    def step(
        self, actions: Sequence[str | None]
    ) -> tuple[list[str], list[float], list, list, list[dict]]: ...


@dataclass
class StepRows:
    """N step rows from T trajectories (ragged token lists; the rest (N,) unless noted).

    Rows of one trajectory appear in step order; ``episode_*`` fields are (T,), indexed by the
    trajectory's position (trajectory t is copy t % G of task t // G).
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    response_log_probs: list[list[float] | None]
    rewards: np.ndarray  # (N,) float64: environment reward minus the invalid-action penalty
    group_uids: list[str]
    traj_uids: list[str]
    step_ids: np.ndarray  # (N,) int64
    anchors: list[Hashable]
    action_valid: np.ndarray  # (N,) bool
    episode_returns: np.ndarray  # (T,)
    episode_won: np.ndarray  # (T,) bool
    episode_lengths: np.ndarray  # (T,)
    texts: list[str] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.prompt_ids)
        for name in ("response_ids", "response_log_probs", "rewards", "group_uids", "traj_uids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"StepRows.{name} has {len(getattr(self, name))} rows, expected {n}")
        for name in ("step_ids", "anchors", "action_valid"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"StepRows.{name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def metrics(self) -> dict[str, float]:
        """Episode-level numbers for the iteration's log (lamina's metric names)."""
        return {
            "success_rate": float(self.episode_won.mean()) if len(self.episode_won) else 0.0,
            "mean_return": float(self.episode_returns.mean()) if len(self.episode_returns) else 0.0,
            "invalid_action_rate": float(1 - self.action_valid.mean()) if len(self.action_valid) else 0.0,
            "mean_episode_length": float(self.episode_lengths.mean()) if len(self.episode_lengths) else 0.0,
            "rows": float(len(self)),
        }


def encode_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Prompt token ids through the chat template, ending with the assistant turn."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    return list(encoded)


_ROW_KEYS = ("prompt", "response", "logp", "reward", "group", "traj", "step", "anchor", "valid", "text")


@dataclass
class _Episodes:
    """The lock-step state of T episodes and the rows recorded so far."""

    memories: list[EpisodeMemory]
    observations: list[str]
    infos: list[dict]
    done: list[bool]
    returns: np.ndarray
    won: np.ndarray
    lengths: np.ndarray
    rows: dict[str, list] = field(default_factory=lambda: {k: [] for k in _ROW_KEYS})


async def play_steps(
    client: GenerateClient,
    tokenizer: Any,
    runner: EnvRunner,
    task_seeds: Sequence[int],
    group_size: int,
    *,
    max_steps: int,
    prompt_cfg: PromptConfig,
    sampling_params: dict[str, Any],
    invalid_penalty: float,
    uid_prefix: str = "",
    max_prompt_length: int | None = None,
) -> StepRows:
    """Plays ``len(task_seeds) * group_size`` episodes on the runner's first environments.

    Args:
        client: verl's ``LLMServerClient`` (or anything with its ``generate``).
        tokenizer: the policy's tokenizer (chat template, decoding).
        runner: the environments (``EnvGroupRunner``), at least B x G of them.
        task_seeds: one seed per task; its G copies reset with it.
        group_size: G.
        max_steps: steps per episode at most.
        prompt_cfg: lamina's prompt settings (history H, think, ...).
        sampling_params: passed to the server (``temperature``, ``top_p``, ``max_tokens``, ``logprobs``).
        invalid_penalty: subtracted from the reward of a step whose action is invalid.
        uid_prefix: makes ``uid``/``traj_uid`` unique across iterations (e.g. ``"it3-"``).
        max_prompt_length: longer prompts keep their last tokens (the current observation, the
            admissible actions and the answer format sit at the end), before they are sent, so the
            server and the update see the same prompt.

    Returns:
        The step rows; group uid ``{prefix}g{task index}``, trajectory uid ``{prefix}t{t}``.
    """
    n_traj = len(task_seeds) * group_size
    if runner.num_envs < n_traj:
        raise ValueError(f"need {n_traj} environments for {len(task_seeds)} tasks x {group_size}")
    seeds = [int(task_seeds[t // group_size]) for t in range(n_traj)]
    seeds += [seeds[0]] * (runner.num_envs - n_traj)
    observations, infos = await asyncio.to_thread(runner.reset, seeds)
    state = _Episodes(
        memories=[EpisodeMemory(task=info["task"]) for info in infos[:n_traj]],
        observations=list(observations[:n_traj]),
        infos=list(infos[:n_traj]),
        done=[False] * n_traj,
        returns=np.zeros(n_traj),
        won=np.zeros(n_traj, dtype=bool),
        lengths=np.zeros(n_traj, dtype=np.int64),
    )
    settings = _StepSettings(
        prompt_cfg,
        dict(sampling_params),
        invalid_penalty,
        group_size,
        max_steps,
        uid_prefix,
        max_prompt_length,
    )
    for step in range(max_steps):
        active = [t for t in range(n_traj) if not state.done[t]]
        if not active:
            break
        await _lock_step(client, tokenizer, runner, state, active, step, settings)
    return _rows(state)


@dataclass(frozen=True)
class _StepSettings:
    """What every lock-step of one ``play_steps`` call shares."""

    prompt_cfg: PromptConfig
    sampling_params: dict[str, Any]
    invalid_penalty: float
    group_size: int
    max_steps: int
    uid_prefix: str
    max_prompt_length: int | None


async def _lock_step(
    client, tokenizer, runner, state: _Episodes, active: list[int], step: int, cfg: _StepSettings
):
    """One step of every active episode: prompts -> concurrent generation -> one env step."""
    prompts = [
        encode_prompt(
            tokenizer,
            build_messages(
                cfg.prompt_cfg,
                state.memories[t],
                state.observations[t],
                state.infos[t]["admissible_actions"],
                step,
                cfg.max_steps,
            ),
        )[-(cfg.max_prompt_length or 0) :]
        for t in active
    ]
    outputs = await asyncio.gather(
        *[
            client.generate(
                f"{cfg.uid_prefix}t{t}", prompt_ids=prompt, sampling_params=dict(cfg.sampling_params)
            )
            for t, prompt in zip(active, prompts, strict=True)
        ]
    )
    texts = [tokenizer.decode(out.token_ids, skip_special_tokens=True) for out in outputs]
    parsed = [parse_step_action(text, state.infos[t]) for t, text in zip(active, texts, strict=True)]
    actions: list[str | None] = [None] * runner.num_envs
    for t, p in zip(active, parsed, strict=True):
        actions[t] = p.action
    next_obs, rewards, terminated, truncated, next_infos = await asyncio.to_thread(runner.step, actions)
    for t, prompt, out, text, p in zip(active, prompts, outputs, texts, parsed, strict=True):
        valid = p.valid and bool(next_infos[t].get("action_valid", True))
        reward = float(rewards[t]) - (0.0 if valid else cfg.invalid_penalty)
        values = (
            prompt,
            list(out.token_ids),
            out.log_probs,
            reward,
            f"{cfg.uid_prefix}g{t // cfg.group_size}",
            f"{cfg.uid_prefix}t{t}",
            step,
            state.infos[t]["anchor"],
            valid,
            text,
        )
        for key, value in zip(_ROW_KEYS, values, strict=True):
            state.rows[key].append(value)
        state.memories[t].steps.append((state.observations[t], p.action or text.strip()[:200]))
        state.observations[t], state.infos[t] = next_obs[t], next_infos[t]
        state.returns[t] += reward
        state.lengths[t] += 1
        state.won[t] = bool(next_infos[t].get("won", False))
        state.done[t] = bool(terminated[t] or truncated[t])


def _rows(state: _Episodes) -> StepRows:
    rows = state.rows
    return StepRows(
        prompt_ids=rows["prompt"],
        response_ids=rows["response"],
        response_log_probs=rows["logp"],
        rewards=np.asarray(rows["reward"], dtype=np.float64),
        group_uids=rows["group"],
        traj_uids=rows["traj"],
        step_ids=np.asarray(rows["step"], dtype=np.int64),
        anchors=rows["anchor"],
        action_valid=np.asarray(rows["valid"], dtype=bool),
        episode_returns=state.returns,
        episode_won=state.won,
        episode_lengths=state.lengths,
        texts=rows["text"],
    )


def object_array(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array, element by element (``np.array`` would turn tuple anchors into 2-D)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def to_dataproto(rows: StepRows, pad_token_id: int, *, max_prompt_length: int, max_response_length: int):
    """verl's ``DataProto`` of the rows (see the module docstring for the keys and shapes).

    Prompts longer than ``max_prompt_length`` keep their last tokens (the current observation and
    the answer format sit at the end); responses are cut to ``max_response_length``; an empty
    response becomes one pad token (with its reward), so no row loses its reward.
    """
    from verl import DataProto

    n = len(rows)
    prompts = [p[-max_prompt_length:] for p in rows.prompt_ids]
    # an empty response (a server that stopped at once) becomes one pad token, so the row keeps a
    # response token to carry its reward and penalty
    responses = [r[:max_response_length] or [pad_token_id] for r in rows.response_ids]
    width_p = max((len(p) for p in prompts), default=1)
    width_r = max(max((len(r) for r in responses), default=1), 1)
    prompt_ids = torch.full((n, width_p), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, width_p), dtype=torch.long)
    response_ids = torch.full((n, width_r), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((n, width_r), dtype=torch.long)
    scores = torch.zeros((n, width_r), dtype=torch.float32)
    log_probs = torch.zeros((n, width_r), dtype=torch.float32)
    have_log_probs = all(lp is not None for lp in rows.response_log_probs) and n > 0
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if p:
            prompt_ids[i, width_p - len(p) :] = torch.as_tensor(p)
            prompt_mask[i, width_p - len(p) :] = 1
        if r:
            response_ids[i, : len(r)] = torch.as_tensor(r)
            response_mask[i, : len(r)] = 1
            scores[i, len(r) - 1] = float(rows.rewards[i])
            row_log_probs = rows.response_log_probs[i]
            if have_log_probs and row_log_probs:
                log_probs[i, : len(r)] = torch.as_tensor(row_log_probs[: len(r)])
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    # position ids count real tokens only (left padding does not shift them), as verl builds them
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    tensors = {
        "prompts": prompt_ids,
        "responses": response_ids,
        "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "response_mask": response_mask,
        "rm_scores": scores,
    }
    if have_log_probs:
        tensors["rollout_log_probs"] = log_probs
    non_tensors = {
        "uid": object_array(rows.group_uids),
        "traj_uid": object_array(rows.traj_uids),
        "step_id": object_array([int(s) for s in rows.step_ids]),
        "anchor": object_array(rows.anchors),
        "action_valid": object_array([bool(v) for v in rows.action_valid]),
    }
    return DataProto.from_dict(
        tensors=tensors, non_tensors=non_tensors, meta_info={"rollout": rows.metrics()}
    )
