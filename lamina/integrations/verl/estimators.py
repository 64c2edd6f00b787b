"""GiGPO in verl's advantage-estimator registry (``algorithm.adv_estimator=gigpo``).

verl hands an estimator token-level tensors; a GiGPO row is one (trajectory, step) response, so
the row reward is the sum of its token-level rewards (verl puts the step reward on the last
token), and the row keys come from the batch's ``non_tensor_batch``:

- ``uid``: the group (task) id, as for GRPO;
- ``traj_uid``: the trajectory id;
- ``step_id``: the step index inside the trajectory;
- ``anchor``: the hashable environment-state key.

verl's generic ``compute_advantage`` passes ``index`` (the uid) only; lamina's verl plugin passes
``non_tensor_batch`` too, as verl does for its GDPO estimator.

    import lamina.integrations.verl.estimators  # registers "gigpo"
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import register_adv_est

from lamina.algorithms.torch_advantages import gigpo_advantages

DEFAULTS = {"gamma": 0.95, "step_weight": 1.0, "norm": "std", "episode_stats": "steps", "eps": 1e-6}


def _options(config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """GiGPO options: defaults, then ``config.gigpo`` (a verl AlgoConfig sub-dict), then kwargs."""
    options = dict(DEFAULTS)
    section = None
    if config is not None:
        section = config.get("gigpo", None) if hasattr(config, "get") else getattr(config, "gigpo", None)
    options.update({k: v for k, v in dict(section or {}).items() if k in DEFAULTS})
    options.update({k: v for k, v in overrides.items() if k in DEFAULTS})
    return options


@register_adv_est("gigpo")
def compute_gigpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    non_tensor_batch: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GiGPO advantages, token-level.

    Args:
        token_level_rewards: (B, R) rewards per response token; a row's reward is their sum.
        response_mask: (B, R) 1 on response tokens.
        index: (B,) group ids (verl's ``uid``); ``non_tensor_batch["uid"]`` when absent.
        config: verl's AlgoConfig; an optional ``gigpo`` section sets gamma, step_weight, norm, ...
        non_tensor_batch: holds ``traj_uid``, ``step_id`` and ``anchor`` arrays of length B.

    Returns:
        ``(advantages, returns)``, both (B, R) in ``token_level_rewards``' dtype: the row advantage
        (computed in float64, see ``lamina.algorithms.torch_advantages``) on every response token.
    """
    batch = dict(non_tensor_batch or {})
    batch.update({k: kwargs.pop(k) for k in ("traj_uid", "step_id", "anchor") if k in kwargs})
    missing = [k for k in ("traj_uid", "step_id", "anchor") if k not in batch]
    if missing:
        raise ValueError(
            f"gigpo needs per-row {', '.join(missing)} in non_tensor_batch (lamina's verl agent loop writes "
            "them); for outcome-only data use adv_estimator=grpo"
        )
    groups = index if index is not None else batch["uid"]
    # float64 before the sum: statistics never see more than the inputs' own rounding
    row_rewards = (token_level_rewards.double() * response_mask.double()).sum(-1)
    steps = torch.as_tensor([int(s) for s in batch["step_id"]], device=row_rewards.device)
    advantages = gigpo_advantages(
        row_rewards,
        list(batch["traj_uid"]),
        steps,
        list(groups),
        list(batch["anchor"]),
        **_options(config, kwargs),
    )
    token_advantages = advantages.to(token_level_rewards.dtype)[:, None] * response_mask
    return token_advantages, token_advantages
