"""verl's PPO config, composed from lamina's ``RunConfig`` and checked with verl's own validation.

verl's config is its Hydra tree (``verl/trainer/config/ppo_trainer.yaml``); lamina composes it with
Hydra's compose API, then sets the keys lamina's config decides (model, estimator, loss, rollout
sizes, optimiser, output folder), then ``verl_overrides`` (raw verl keys) last, so anything verl
has stays reachable. ``check_with_verl`` runs the checks verl's ``main_ppo`` runs
(``validate_config`` and its dataclass ``__post_init__`` checks).

How a per-step batch maps onto verl's sizes: verl counts prompts, lamina counts step rows.
``data.train_batch_size`` is B (tasks per iteration) and ``rollout.n`` is G (copies per task), so
verl's divisibility checks see B x G trajectories; the number of step rows varies per iteration
and is cut into ``mini_batches`` equal mini-batches by lamina's trainer (``trainer.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from lamina.agents.config import ModelConfig
from lamina.algorithms.advantages import VERL_NAMES
from lamina.trainer.config import RunConfig, VerlBackendConfig

if TYPE_CHECKING:  # freezing imports verl's engine: only when a selection is built
    from lamina.integrations.verl.freezing import LayerSelection

ROLLOUT_ENGINES = ("vllm", "sglang")
ROLLOUT_MANAGER = "lamina.integrations.verl.trainer.StepRolloutManager"


def plain_dict(node: Any) -> dict[str, Any]:
    """A mapping node of verl's config (``config.lamina.env.kwargs``, ...) as a plain resolved dict."""
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    if not isinstance(data, dict):
        raise TypeError(f"expected a mapping, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def verl_config_dir() -> Path:
    """verl's own Hydra config folder (inside the installed verl package)."""
    import verl

    return Path(verl.__file__).parent / "trainer" / "config"


def base_verl_config() -> DictConfig:
    """verl's ``ppo_trainer`` config, unmodified."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. right after lamina's own compose
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
        return compose(config_name="ppo_trainer")


def model_folder(model_cfg: ModelConfig) -> str:
    """The folder or HF id verl loads: ``model.path``, else the cached SmolLM2 checkpoint."""
    if model_cfg.path:
        return str(model_cfg.path)
    if model_cfg.name == "smollm2-135m":
        from lamina.agents.models import smollm2_checkpoint

        return str(smollm2_checkpoint())
    raise ValueError(
        f"model.name={model_cfg.name!r} has no weights on disk for verl to load; valid with backend=verl: "
        "smollm2-135m or model.path=<HF id or folder>"
    )


def attention(choice: str) -> str:
    """``verl.attn_implementation``, with ``auto`` resolved: flash-attn only where it is installed
    (verl's default kernel, which the image builds only with FLASH_ATTN=1), else PyTorch's sdpa."""
    if choice != "auto":
        return choice
    import importlib.util

    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def lamina_settings(cfg: RunConfig, verl_cfg: VerlBackendConfig, model_path: str) -> dict[str, Any]:
    """The verl keys lamina's config decides, as ``{dotted key: value}``."""
    algo, loss, trainer = cfg.algorithm, cfg.algorithm.loss, cfg.trainer
    group_size, tasks = cfg.rollout.group_size, cfg.rollout.batch_size
    dtype = {"auto": "bf16", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[cfg.model.dtype]
    norm_by_std = algo.norm == "std"
    loss_agg = loss.loss_agg_mode
    if algo.estimator == "dr_grpo":  # Dr. GRPO: GRPO without std, sequence-sum loss / constant
        norm_by_std, loss_agg = False, "seq-mean-token-sum-norm"
    actor = "actor_rollout_ref.actor"
    settings: dict[str, Any] = {
        "actor_rollout_ref.model.path": model_path,
        "actor_rollout_ref.model.enable_gradient_checkpointing": verl_cfg.gradient_checkpointing,
        "actor_rollout_ref.model.use_remove_padding": True,
        "+actor_rollout_ref.model.override_config.attn_implementation": attention(
            verl_cfg.attn_implementation
        ),
        f"{actor}.strategy": verl_cfg.strategy,
        "actor_rollout_ref.ref.strategy": verl_cfg.strategy,
        f"{actor}.optim.lr": trainer.lr,
        f"{actor}.optim.weight_decay": trainer.weight_decay,
        f"{actor}.optim.clip_grad": trainer.update.max_grad_norm,
        f"{actor}.ppo_epochs": trainer.update.ppo_epochs,
        # verl counts mini-batches in prompts (x rollout.n): B/mini_batches tasks each.
        f"{actor}.ppo_mini_batch_size": max(1, tasks // verl_cfg.mini_batches),
        f"{actor}.ppo_micro_batch_size_per_gpu": verl_cfg.micro_batch_size,
        f"{actor}.clip_ratio": loss.clip_ratio,
        f"{actor}.clip_ratio_low": loss.clip_ratio,
        f"{actor}.clip_ratio_high": loss.clip_ratio,
        f"{actor}.loss_agg_mode": loss_agg,
        f"{actor}.entropy_coeff": loss.entropy_coef,
        f"{actor}.use_kl_loss": loss.kl_coef > 0,
        f"{actor}.kl_loss_coef": loss.kl_coef,
        f"{actor}.kl_loss_type": loss.kl_type,
        f"{actor}.fsdp_config.model_dtype": "fp32",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": verl_cfg.micro_batch_size,
        "actor_rollout_ref.rollout.name": verl_cfg.rollout_engine,
        "actor_rollout_ref.rollout.n": group_size,
        "actor_rollout_ref.rollout.temperature": cfg.rollout.temperature,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": verl_cfg.tensor_parallel_size,
        "actor_rollout_ref.rollout.gpu_memory_utilization": verl_cfg.gpu_memory_utilization,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": verl_cfg.micro_batch_size,
        "actor_rollout_ref.rollout.val_kwargs.temperature": cfg.eval.temperature,
        "actor_rollout_ref.rollout.val_kwargs.do_sample": cfg.eval.temperature > 0,
        "actor_rollout_ref.rollout.dtype": "bfloat16"
        if dtype == "bf16"
        else "float16"
        if dtype == "fp16"
        else "float32",
        "data.train_batch_size": tasks,
        "data.max_prompt_length": verl_cfg.max_prompt_length,
        "data.max_response_length": verl_cfg.max_response_length,
        "data.seed": trainer.seed,
        "algorithm.adv_estimator": VERL_NAMES[algo.estimator],
        "algorithm.norm_adv_by_std_in_grpo": norm_by_std,
        "algorithm.use_kl_in_reward": False,
        "+algorithm.gigpo": {
            "gamma": algo.gamma,
            "step_weight": algo.step_weight,
            "norm": "std" if norm_by_std else "none",
            "episode_stats": algo.episode_stats,
        },
        "trainer.use_v1": False,  # the DataProto trainer: lamina's per-step trainer extends it
        "trainer.nnodes": verl_cfg.nnodes,
        "trainer.n_gpus_per_node": verl_cfg.n_gpus_per_node,
        "trainer.total_training_steps": trainer.iterations,
        "trainer.total_epochs": 1,
        # absolute: Ray actors need not share the launcher's working directory
        "trainer.default_local_dir": str(Path(trainer.output_dir).resolve() / "checkpoints"),
        "trainer.save_freq": trainer.save_every if trainer.save_every > 0 else -1,
        "trainer.resume_mode": "auto" if trainer.resume else "disable",
        "trainer.val_before_train": False,
        "trainer.test_freq": -1,
        "trainer.logger": list(verl_cfg.logger),
        "trainer.project_name": "lamina",
        "trainer.experiment_name": Path(trainer.output_dir).name,
        "critic.enable": False,
        # verl's slot for a custom rollout manager: lamina's per-step rollout
        "+actor_rollout_ref.rollout.agent.agent_loop_manager_class": ROLLOUT_MANAGER,
    }
    if loss.loss_scale_factor:
        settings[f"{actor}.loss_scale_factor"] = loss.loss_scale_factor
    return settings


def apply_settings(config: DictConfig, settings: dict[str, Any]) -> None:
    """Sets dotted keys; a leading ``+`` adds a key verl's tree does not have."""
    with open_dict(config):
        for key, value in settings.items():
            OmegaConf.update(config, key.lstrip("+"), value, merge=False, force_add=key.startswith("+"))


def apply_overrides(config: DictConfig, overrides: list[str]) -> None:
    """``key=value`` strings (values parsed as YAML), as on verl's command line."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"verl.overrides entry {item!r} is not key=value")
        key, text = item.split("=", 1)
        add = key.startswith("+")
        key = key.lstrip("+")
        if not add and OmegaConf.select(config, key, default="__missing__") == "__missing__":
            raise ValueError(f"verl.overrides: {key!r} is not a verl config key (prefix '+' to add one)")
        with open_dict(config):
            OmegaConf.update(config, key, yaml.safe_load(text), merge=False, force_add=add)


def compose_verl_config(
    cfg: RunConfig, verl_cfg: VerlBackendConfig | None = None, model_path: str | None = None
):
    """verl's PPO config for a lamina run (nothing launched, nothing loaded).

    Args:
        cfg: lamina's ``RunConfig``.
        verl_cfg: the ``verl`` section (defaults when None).
        model_path: what verl loads (default: ``model_folder(cfg.model)``).

    Returns:
        An OmegaConf ``DictConfig`` in verl's schema, plus a ``lamina`` section that lamina's
        verl trainer reads (environment, prompt, layers).
    """
    verl_cfg = verl_cfg or VerlBackendConfig()
    config = base_verl_config()
    apply_settings(config, lamina_settings(cfg, verl_cfg, model_path or model_folder(cfg.model)))
    apply_settings(config, {"+lamina": lamina_section(cfg, verl_cfg)})
    apply_overrides(config, list(verl_cfg.overrides))
    selection = layer_selection(cfg)
    selection.sync = resolve_weight_sync(verl_cfg.weight_sync, config)
    apply_settings(config, {"lamina.layers": selection.to_env()})
    return config


WEIGHT_SYNCS = ("auto", "trainable", "all")


def resolve_weight_sync(choice: str, config: DictConfig) -> str:
    """``verl.weight_sync`` -> ``trainable`` or ``all`` for this composed config.

    A sync of the trainable tensors alone leaves the other tensors as the servers hold them, so it
    needs servers that keep their weights between syncs: verl's hybrid vLLM/SGLang servers free
    them while the actor trains (``free_cache_engine=true``, vLLM sleep level 2) and reload every
    tensor from the sync.

    Raises:
        ValueError: an unknown choice, or ``trainable`` with servers that free their weights.
    """
    if choice not in WEIGHT_SYNCS:
        raise ValueError(f"verl.weight_sync={choice!r}; valid: {', '.join(WEIGHT_SYNCS)}")
    keeps = not bool(config.actor_rollout_ref.rollout.get("free_cache_engine", True))
    if choice == "trainable" and not keeps:
        raise ValueError(
            "verl.weight_sync=trainable: the rollout servers free their weights between syncs "
            "(actor_rollout_ref.rollout.free_cache_engine=true), so every tensor must be sent; valid: "
            "weight_sync=all or auto, or verl.overrides=[actor_rollout_ref.rollout.free_cache_engine=false]"
        )
    return "trainable" if choice == "trainable" or (choice == "auto" and keeps) else "all"


def lamina_section(cfg: RunConfig, verl_cfg: VerlBackendConfig) -> dict[str, Any]:
    """What lamina's per-step trainer needs beyond verl's keys, as plain data."""
    return {
        "env": OmegaConf.to_container(OmegaConf.structured(cfg.env)),
        "agent": OmegaConf.to_container(OmegaConf.structured(cfg.agent)),
        "rollout": {
            "invalid_penalty": cfg.rollout.invalid_penalty,
            "env_workers": cfg.rollout.env_workers,
        },
        "layers": layer_selection(cfg).to_env(),
        "output_dir": str(Path(cfg.trainer.output_dir).resolve()),
        "mini_batches": verl_cfg.mini_batches,
        "eval_episodes": cfg.eval.episodes,
        "seed": cfg.trainer.seed,
    }


def layer_selection(cfg: RunConfig) -> LayerSelection:
    """The ``LayerSelection`` of a RunConfig (layers, modules, embeddings, LM head, multipliers)."""
    from lamina.integrations.verl.freezing import LayerSelection

    layers = cfg.layers
    if isinstance(layers, str) and layers.strip().startswith("lora:"):
        # verl's own LoRA (actor_rollout_ref.model.lora_rank) adapts every matching layer of the
        # whole model and syncs adapters to vLLM its own way; lamina's per-block freezing does not
        # carry over to it.
        raise ValueError(
            f"layers={layers!r}: backend=verl cannot train LoRA adapters with lamina's layer selection; "
            "valid with backend=verl: a block spec or all (LoRA arms run on backend=native)"
        )
    if not isinstance(layers, (str, int)):
        layers = list(layers)
    return LayerSelection(
        layers=layers,
        modules=cfg.modules,
        train_embeddings=cfg.trainer.train_embeddings,
        train_lm_head=cfg.trainer.train_lm_head,
        lr_multipliers={int(k): float(v) for k, v in dict(cfg.trainer.lr_multipliers).items()},
    )


def worker_env(config: DictConfig) -> dict[str, str]:
    """Environment variables every verl worker gets: the layer selection and lamina's engine."""
    from lamina.integrations.verl.freezing import ENGINE_VENDOR, ENV_VAR

    return {ENV_VAR: config.lamina.layers, "VERL_ENGINE_VENDOR": ENGINE_VENDOR}


def check_with_verl(config: DictConfig) -> None:
    """verl's own checks, as ``main_ppo`` runs them before launching (raises on a bad config)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(
        config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
    )


def set_process_env(config: DictConfig) -> None:
    """Puts ``worker_env`` into this process (for in-process workers and tests)."""
    os.environ.update(worker_env(config))
