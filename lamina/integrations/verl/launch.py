"""``lamina train backend=verl``: validate, compose verl's config, launch on Ray.

    from lamina.integrations.verl.launch import run, validate
    validate(cfg)          # raises lamina.errors.ConfigError with one line; returns verl's config
    out = run(cfg)         # trains on a local Ray or on verl.ray_address; returns the output folder

Every verl process (driver, TaskRunner, workers) gets lamina's plugin through verl's
``verl.plugins`` entry point, and through the Ray runtime environment the layer selection
(``LAMINA_VERL_LAYERS``) and lamina's engine (``VERL_ENGINE_VENDOR=lamina``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from omegaconf import DictConfig, OmegaConf

from lamina.algorithms.advantages import VERL_NAMES
from lamina.compose import compose
from lamina.errors import ConfigError
from lamina.integrations.verl.config import (
    ROLLOUT_ENGINES,
    VerlBackendConfig,
    check_with_verl,
    compose_verl_config,
    layer_selection,
    worker_env,
)
from lamina.trainer.config import RunConfig

if TYPE_CHECKING:  # freezing imports verl's FSDP engine
    from lamina.integrations.verl.freezing import LayerSelection

STRATEGIES = ("fsdp", "fsdp2")


def backend_config(cfg: RunConfig) -> VerlBackendConfig:
    """The run's ``verl`` section."""
    return cfg.verl


def split_run_config(raw: DictConfig) -> tuple[RunConfig, VerlBackendConfig]:
    """A composed lamina config (a ``DictConfig``) -> ``(RunConfig, its verl section)``."""
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), raw))
    assert isinstance(cfg, RunConfig)
    return cfg, cfg.verl


def _check_lamina(cfg: RunConfig, verl_cfg: VerlBackendConfig) -> None:
    """The checks that need no verl: one clear line per bad value."""
    from lamina.agents.models import model_num_blocks
    from lamina.envs import resolve_env_id
    from lamina.integrations.verl.freezing import LayerSelection  # noqa: F401  (fails early if verl is broken)
    from lamina.trainer.layers import parse_layers

    if cfg.algorithm.estimator not in VERL_NAMES:
        raise ConfigError(
            f"algorithm.estimator={cfg.algorithm.estimator!r} is not available with backend=verl; "
            f"valid: {', '.join(VERL_NAMES)}"
        )
    if cfg.algorithm.anchor_similarity is not None:
        raise ConfigError(
            f"algorithm.anchor_similarity={cfg.algorithm.anchor_similarity}: backend=verl clusters GiGPO "
            "anchors by equality only; valid: null"
        )
    if cfg.agent.mode != "generate":
        raise ConfigError(
            f"agent.mode={cfg.agent.mode!r}: verl's rollout servers generate text, so backend=verl needs "
            "agent.mode=generate"
        )
    if cfg.rollout.group_size < 2:
        raise ConfigError(f"rollout.group_size={cfg.rollout.group_size}: group estimators need >= 2")
    if verl_cfg.rollout_engine not in ROLLOUT_ENGINES:
        raise ConfigError(
            f"verl.rollout_engine={verl_cfg.rollout_engine!r}; valid: {', '.join(ROLLOUT_ENGINES)}"
        )
    if verl_cfg.strategy not in STRATEGIES:
        raise ConfigError(f"verl.strategy={verl_cfg.strategy!r}; valid: {', '.join(STRATEGIES)}")
    tasks = cfg.rollout.batch_size
    if verl_cfg.mini_batches < 1 or tasks % verl_cfg.mini_batches:
        raise ConfigError(
            f"verl.mini_batches={verl_cfg.mini_batches} must divide rollout.batch_size={tasks} "
            "(verl counts a mini-batch in tasks)"
        )
    try:
        resolve_env_id(cfg.env.name)
        selection = layer_selection(cfg)
        parse_layers(selection.layers, model_num_blocks(cfg.model))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if selection.layers == "none" or selection.layers == []:
        raise ConfigError("layers=none leaves nothing to train; valid with backend=verl: a block spec or all")
    if verl_cfg.strategy == "fsdp" and partial_blocks(selection):
        # verl's FSDP1 wraps with use_orig_params=False: one flat parameter per wrapped block (and
        # one for the embeddings, final norm and LM head), which torch refuses to build from a mix of
        # trainable and frozen tensors. Whole blocks are each one flat parameter, so they work.
        raise ConfigError(
            f"verl.strategy=fsdp cannot train part of a block or the embeddings/LM head "
            f"(modules={selection.modules!r}, train_embeddings={selection.train_embeddings}, "
            f"train_lm_head={selection.train_lm_head}): FSDP1 flattens each wrapped module into one "
            "parameter; valid: verl.strategy=fsdp2, or modules=all without embeddings/LM head"
        )


def partial_blocks(selection: LayerSelection) -> bool:
    """Whether the selection trains only part of a wrapped module (FSDP1 needs whole ones)."""
    return selection.modules != "all" or selection.train_embeddings or selection.train_lm_head


def validate(
    cfg: RunConfig, verl_cfg: VerlBackendConfig | None = None, model_path: str | None = None
) -> DictConfig:
    """Checks a lamina RunConfig for the verl backend and returns verl's composed config.

    Runs lamina's own checks, composes verl's config (``config.compose_verl_config``) and runs
    verl's validation on it (``validate_config``, as verl's ``main_ppo`` does).

    Raises:
        ConfigError: one line naming the bad value and what is valid (verl's message when verl
            refuses the composed config).
    """
    verl_cfg = verl_cfg or backend_config(cfg)
    _check_lamina(cfg, verl_cfg)
    try:
        config = compose_verl_config(cfg, verl_cfg, model_path=model_path)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    try:
        check_with_verl(config)
    except (AssertionError, ValueError, TypeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"verl rejected the composed config: {first}") from None
    return config


def runtime_env(config: DictConfig) -> dict[str, Any]:
    """verl's PPO runtime environment plus lamina's worker variables."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    env = get_ppo_ray_runtime_env(config)
    env.setdefault("env_vars", {}).update(worker_env(config))
    return env


class LaminaTaskRunner:
    """verl's task-runner role (``main_ppo_v0.BaseTaskRunner``) building ``StepPPOTrainer``."""

    def run(self, config: DictConfig) -> None:
        from verl.trainer.main_ppo_v0 import BaseTaskRunner
        from verl.utils.config import omega_conf_to_dataclass

        from lamina.integrations.verl.trainer import StepPPOTrainer

        OmegaConf.resolve(config)
        roles = BaseTaskRunner()
        _, worker_group_cls = roles.add_actor_rollout_worker(config)
        roles.add_reward_model_resource_pool(config)
        check_with_verl(config)
        tokenizer = omega_conf_to_dataclass(config.actor_rollout_ref.model).tokenizer
        trainer = StepPPOTrainer(
            config=config,
            tokenizer=tokenizer,
            role_worker_mapping=roles.role_worker_mapping,
            resource_pool_manager=roles.init_resource_pool_mgr(config),
            ray_worker_group_cls=worker_group_cls,
        )
        try:
            trainer.init_workers()
            trainer.fit()
        finally:
            release_placement_groups(trainer)


def release_placement_groups(trainer: Any) -> None:
    """Frees the GPUs verl's resource pools reserved. Ray keeps a placement group until the job
    (the driver process) ends, so without this a second run from the same process (a sweep, a
    resume in a notebook) would wait for GPUs that nothing uses."""
    from ray.util import remove_placement_group

    manager = getattr(trainer, "resource_pool_manager", None)
    for pool in getattr(manager, "resource_pool_dict", {}).values():
        for group in pool.pgs or []:
            remove_placement_group(group)
        pool.pgs = None


def run(cfg: RunConfig, verl_cfg: VerlBackendConfig | None = None) -> Path:
    """Trains with verl and returns ``trainer.output_dir``.

    Writes ``config.yaml`` (lamina's config) and ``verl_config.yaml`` (what verl ran with), starts or
    joins Ray (``verl.ray_address``), and runs ``LaminaTaskRunner`` as a Ray actor; verl then
    writes checkpoints under ``checkpoints/`` and lamina's ``metrics.jsonl``.
    """
    import ray

    from lamina.trainer.run_folder import claim_run_folder

    verl_cfg = verl_cfg or backend_config(cfg)
    config = validate(cfg, verl_cfg)
    out = Path(cfg.trainer.output_dir)
    # One run per folder and one writer at a time, as for the native trainer: verl's checkpoints
    # and lamina's metrics.jsonl land in it.
    with claim_run_folder(out, cfg.trainer.resume, cfg.trainer.overwrite):
        (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        (out / "verl_config.yaml").write_text(OmegaConf.to_yaml(config))
        env = runtime_env(config)
        if not ray.is_initialized():
            ray.init(address=verl_cfg.ray_address, runtime_env=env)
        # The task runner carries lamina's worker variables itself (Ray passes an actor's runtime
        # environment on to the actors it starts), so they also reach verl's workers when Ray was
        # started by someone else. ray.remote's stubs type a decorated class as the class itself.
        runner = cast(Any, ray.remote(num_cpus=1)(LaminaTaskRunner)).options(runtime_env=env).remote()
        ray.get(runner.run.remote(config))
    return out


def compose_run_config(overrides: list[str]) -> tuple[Any, VerlBackendConfig]:
    """lamina's config tree (``configs/train.yaml``) with Hydra overrides -> ``(RunConfig, verl section)``."""
    cfg = compose("train", overrides, RunConfig)
    return cfg, backend_config(cfg)


def main(argv: list[str] | None = None) -> int:
    """``python -m lamina.integrations.verl.launch [hydra overrides]``: what ``lamina train
    backend=verl`` runs, usable before the CLI routes to it (e.g. by ``scripts/gpu_smoke.sh``)."""
    import sys

    try:
        cfg, verl_cfg = compose_run_config(list(sys.argv[1:] if argv is None else argv))
        out = run(cfg, verl_cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
