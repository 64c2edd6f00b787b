"""Multi-turn rollouts: B tasks x G copies, stepped in lock-step until every episode is done.

batch = collect_rollouts(policy, envs, task_seeds=[3, 7], group_size=8, cfg=rollout_cfg, ...)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from lamina.agents.parsing import parse_step_action
from lamina.agents.policy import Generation
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.envs.runner import EnvGroupRunner

ROW_FIELDS = (
    "prompt",
    "response",
    "logp",
    "reward",
    "traj",
    "step",
    "group",
    "anchor",
    "valid",
    "candidates",
    "chosen",
)


# RolloutBatch's fields with one entry per step row; CHOICE_FIELDS too, in choose mode (else None).
PER_ROW_FIELDS = (
    "prompt_ids",
    "response_ids",
    "old_log_probs",
    "rewards",
    "traj_ids",
    "step_ids",
    "group_ids",
    "anchors",
    "action_valid",
)
CHOICE_FIELDS = ("candidates", "chosen")


@dataclass
class RolloutBatch:
    """N step rows (one prompt, one response each) from T trajectories.

    Ragged token fields are lists of 1-D tensors; the rest are arrays of shape (N,), except the
    ``episode_*`` fields, shape (T,), indexed by trajectory id.
    """

    prompt_ids: list[torch.Tensor]  # N x (P_i,)
    response_ids: list[torch.Tensor]  # N x (R_i,)
    old_log_probs: list[torch.Tensor]  # N x (L_i,) the sampling policy's log-probs of the row's units
    rewards: np.ndarray  # (N,) env reward minus invalid-action penalty
    traj_ids: np.ndarray  # (N,)
    step_ids: np.ndarray  # (N,)
    group_ids: np.ndarray  # (N,)
    anchors: list[Hashable]  # (N,)
    action_valid: np.ndarray  # (N,) bool
    episode_returns: np.ndarray  # (T,)
    episode_won: np.ndarray  # (T,) bool
    episode_lengths: np.ndarray  # (T,)
    # The scalar fields (task_type, score, ...) of each trajectory's last info, (T,).
    episode_infos: list[dict] | None = None
    # Choose mode: each row's K_i candidate continuations and the chosen index; None otherwise.
    candidates: list[list[list[int]]] | None = None
    chosen: np.ndarray | None = None  # (N,)

    def __post_init__(self):
        n = len(self.prompt_ids)
        for name in PER_ROW_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"RolloutBatch.{name} has {len(getattr(self, name))} rows, expected {n}")
        if (self.candidates is None) != (self.chosen is None):
            raise ValueError("RolloutBatch.candidates and RolloutBatch.chosen come together")
        if self.candidates is not None:
            assert self.chosen is not None  # checked just above: they come together
            if len(self.candidates) != n or len(self.chosen) != n:
                raise ValueError(f"RolloutBatch.candidates/chosen need {n} rows")
            if any(lp.shape != (1,) for lp in self.old_log_probs):
                raise ValueError("choose-mode rows carry one log-prob each: log pi(a|s), shape (1,)")
        else:
            for r, lp in zip(self.response_ids, self.old_log_probs, strict=True):
                if r.shape != lp.shape:
                    raise ValueError(f"response ids {tuple(r.shape)} and log-probs {tuple(lp.shape)} differ")
        t = len(self.episode_returns)
        if len(self.episode_won) != t or len(self.episode_lengths) != t:
            raise ValueError("episode_returns, episode_won and episode_lengths need one entry per trajectory")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def success_rate(self) -> float:
        return float(self.episode_won.mean()) if len(self.episode_won) else 0.0

    @property
    def mean_return(self) -> float:
        return float(self.episode_returns.mean()) if len(self.episode_returns) else 0.0

    @property
    def invalid_action_rate(self) -> float:
        return float(1.0 - self.action_valid.mean()) if len(self.action_valid) else 0.0


class Policy(Protocol):
    """What rollouts and updates need from a policy (``HFPolicy``, ``ChoicePolicy``).

    ``act`` samples; ``log_probs`` recomputes, differentiably, the log-probs ``act`` recorded
    (response tokens, or the chosen action among its candidates), (B, L) with a mask.
    ``max_response_units`` is L at most (Dr. GRPO's loss constant). ``prefix`` (a
    ``lamina.agents.prefix.PrefixStore``) lets ``log_probs`` start at the lowest trainable block.
    """

    # Read-only here, so that implementations may narrow the type (a PreTrainedModel) or use a property.
    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def max_response_units(self) -> int: ...

    def encode(self, messages: list[dict[str, str]]) -> list[int]: ...

    def act(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]: ...

    def log_probs(
        self,
        prompts: Sequence[torch.Tensor],
        responses: Sequence[torch.Tensor],
        temperature: float,
        *,
        candidates: Sequence[Sequence[Sequence[int]]] | None = None,
        chosen: Sequence[int] | None = None,
        with_entropy: bool = False,
        prefix=None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


def collect_rollouts(
    policy: Policy,
    runner: EnvGroupRunner,
    task_seeds: Sequence[int],
    group_size: int,
    *,
    max_steps: int,
    prompt_cfg: PromptConfig,
    temperature: float,
    invalid_penalty: float,
    on_step: Callable[[int, int], None] | None = None,
) -> RolloutBatch:
    """Plays ``len(task_seeds) * group_size`` episodes on the runner's first environments.

    Trajectory ``t`` is copy ``t % group_size`` of task ``t // group_size``; its group id is the
    task's index in ``task_seeds``. Environments beyond those are reset but never stepped.
    ``on_step(step, active)`` is called after every lock-step.
    """
    n_traj = len(task_seeds) * group_size
    if runner.num_envs < n_traj:
        raise ValueError(
            f"need {n_traj} environments for {len(task_seeds)} tasks x {group_size}, got {runner.num_envs}"
        )
    seeds = [int(task_seeds[t // group_size]) for t in range(n_traj)]
    observations, infos = runner.reset(seeds + [seeds[0]] * (runner.num_envs - n_traj))
    memories = [EpisodeMemory(task=info["task"]) for info in infos[:n_traj]]
    done = [False] * n_traj
    returns = np.zeros(n_traj)
    won = np.zeros(n_traj, dtype=bool)
    lengths = np.zeros(n_traj, dtype=np.int64)
    last_infos = [scalar_fields(info) for info in infos[:n_traj]]
    rows: dict[str, list] = {key: [] for key in ROW_FIELDS}
    for step in range(max_steps):
        active = [t for t in range(n_traj) if not done[t]]
        if not active:
            break
        prompts = [
            policy.encode(
                build_messages(
                    prompt_cfg, memories[t], observations[t], infos[t]["admissible_actions"], step, max_steps
                )
            )
            for t in active
        ]
        generations = policy.act(prompts, [infos[t]["admissible_actions"] for t in active], temperature)
        parsed = {t: parse_step_action(g.text, infos[t]) for t, g in zip(active, generations, strict=True)}
        actions: list[str | None] = [None] * runner.num_envs
        for t in active:
            actions[t] = parsed[t].action
        next_obs, rewards, terminated, truncated, next_infos = runner.step(actions)
        for t, prompt, gen in zip(active, prompts, generations, strict=True):
            valid = parsed[t].valid and next_infos[t].get("action_valid", True)
            reward = float(rewards[t]) - (0.0 if valid else invalid_penalty)
            memories[t].steps.append((observations[t], parsed[t].action or gen.text.strip()[:200]))
            values = (
                torch.as_tensor(prompt),
                gen.response_ids,
                gen.log_probs,
                reward,
                t,
                step,
                t // group_size,
                infos[t]["anchor"],
                valid,
                getattr(gen, "candidates", None),
                getattr(gen, "index", -1),
            )
            for key, value in zip(ROW_FIELDS, values, strict=True):
                rows[key].append(value)
            observations[t], infos[t] = next_obs[t], next_infos[t]
            returns[t] += reward
            lengths[t] += 1
            won[t] = bool(next_infos[t].get("won", False))
            last_infos[t] = scalar_fields(next_infos[t])
            done[t] = bool(terminated[t] or truncated[t])
        if on_step is not None:
            on_step(step, len(active))
    return _to_batch(rows, returns, won, lengths, last_infos)


def scalar_fields(info: dict) -> dict:
    """The str/int/float/bool entries of an info dict (``task_type``, ``score``, ``won``...)."""
    return {k: v for k, v in info.items() if isinstance(v, str | int | float | bool)}


def _to_batch(
    rows: dict[str, list], returns: np.ndarray, won: np.ndarray, lengths: np.ndarray, last_infos: list[dict]
):
    return RolloutBatch(
        prompt_ids=rows["prompt"],
        response_ids=rows["response"],
        old_log_probs=rows["logp"],
        rewards=np.asarray(rows["reward"], dtype=np.float64),
        traj_ids=np.asarray(rows["traj"]),
        step_ids=np.asarray(rows["step"]),
        group_ids=np.asarray(rows["group"]),
        anchors=rows["anchor"],
        action_valid=np.asarray(rows["valid"], dtype=bool),
        episode_returns=returns,
        episode_won=won,
        episode_lengths=lengths,
        episode_infos=last_infos,
        **_choice_fields(rows),
    )


def _choice_fields(rows: dict[str, list]) -> dict:
    """The candidates and chosen indices when every row is a choice (choose mode)."""
    if not rows["candidates"] or any(c is None for c in rows["candidates"]):
        return {}
    return {"candidates": rows["candidates"], "chosen": np.asarray(rows["chosen"], dtype=np.int64)}


def single_step_batch(
    prompt_ids: Sequence[torch.Tensor],
    response_ids: Sequence[torch.Tensor],
    old_log_probs: Sequence[torch.Tensor],
    candidates: list[list[list[int]]] | None = None,
    chosen: Sequence[int] | None = None,
) -> RolloutBatch:
    """A batch whose every row is a one-step trajectory of its own group (zero rewards), for
    driving ``ppo_update`` directly from benchmarks and tests."""
    n = len(prompt_ids)
    return RolloutBatch(
        prompt_ids=list(prompt_ids),
        response_ids=list(response_ids),
        old_log_probs=list(old_log_probs),
        rewards=np.zeros(n),
        traj_ids=np.arange(n),
        step_ids=np.zeros(n, dtype=np.int64),
        group_ids=np.arange(n),
        anchors=list(range(n)),
        action_valid=np.ones(n, dtype=bool),
        episode_returns=np.zeros(n),
        episode_won=np.zeros(n, dtype=bool),
        episode_lengths=np.ones(n, dtype=np.int64),
        candidates=candidates,
        chosen=None if chosen is None else np.asarray(chosen, dtype=np.int64),
    )
