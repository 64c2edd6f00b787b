"""The loss settings' dataclass, apart from the loss code so that composing and checking a config
imports neither torch nor verl."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LossConfig:
    """Loss settings of an ``algorithm`` preset.

    Args:
        clip_ratio: PPO's epsilon.
        clip_ratio_c: dual-clip lower bound for negative advantages (verl's ``clip_ratio_c``);
            ``None`` disables dual clip.
        loss_agg_mode: ``token-mean`` or ``seq-mean-token-sum-norm`` (Dr. GRPO), ...
        loss_scale_factor: the constant of ``seq-mean-token-sum-norm`` (default: max response length).
        kl_coef: weight of the KL to the reference policy inside the loss (0 disables it).
        kl_type: verl's KL estimator name; ``low_var_kl`` is k3.
        entropy_coef: weight of the entropy bonus.
    """

    clip_ratio: float = 0.2
    clip_ratio_c: float | None = None
    loss_agg_mode: str = "token-mean"
    loss_scale_factor: int | None = None
    kl_coef: float = 0.0
    kl_type: str = "low_var_kl"
    entropy_coef: float = 0.0
