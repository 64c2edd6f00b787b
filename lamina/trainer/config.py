"""Dataclasses that mirror the Hydra config tree (``configs/``); each component gets its own part.

Nothing here imports torch, transformers or verl: ``lamina.compose`` checks a command line against
these classes before any heavy import. The ``verl`` section is defined here, not in the verl
backend, so that the trainer never imports ``lamina.integrations.verl``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamina.agents.config import ModelConfig
from lamina.agents.prompt import PromptConfig
from lamina.algorithms.config import LossConfig
from lamina.trainer.logs import LoggingConfig

BACKENDS = ("native", "verl")  # lamina.backend: this process, or verl on Ray


@dataclass
class RolloutConfig:
    """``rollout`` config group.

    Args:
        group_size: G, copies of each task reset with the same seed.
        batch_size: B, tasks per iteration.
        temperature: sampling temperature of training rollouts.
        max_new_tokens: response budget per step.
        micro_batch_size: prompts per ``generate`` call.
        invalid_penalty: subtracted from the reward of a step whose action is invalid.
        env_workers: worker processes stepping the environments (0: in this process; worth it
            only for slow engines such as ALFWorld).
        engine: what samples generate-mode responses: ``hf`` (batched ``transformers`` generate) or
            ``vllm`` (vLLM's offline engine in this process, the trainable blocks synced into it
            after every update; ``lamina.agents.vllm_engine``); ``agent.mode=choose`` scores in torch
            and needs ``hf``.
        vllm_memory: vLLM's ``gpu_memory_utilization``: the share of GPU memory it reserves (weights
            and KV cache); on vLLM's CPU build, the share of host RAM.
        vllm_max_model_len: prompt + response tokens at most per vLLM request.
        tis_cap: with ``engine=vllm``, truncated importance sampling of the engine/trainer mismatch:
            each token's policy-gradient term is weighted by min(exp(logp_trainer - logp_engine),
            tis_cap) (verl's TIS); None: no correction (the gap is still logged).
    """

    group_size: int = 4
    batch_size: int = 2
    temperature: float = 1.0
    max_new_tokens: int = 48
    micro_batch_size: int = 16
    invalid_penalty: float = 0.1
    env_workers: int = 0
    engine: str = "hf"
    vllm_memory: float = 0.15
    vllm_max_model_len: int = 4096
    tis_cap: float | None = None


@dataclass
class ScheduleConfig:
    """``trainer.schedule``: the learning rate of iteration k is ``trainer.lr * lr_lambda(k, ...)``.

    Args:
        warmup_iterations: the lr rises linearly over these first iterations (1/W, 2/W, ..., 1).
        kind: ``constant`` (stay at the peak after warm-up) or ``cosine`` (decay to
            ``min_lr_ratio`` x peak at the last iteration).
        min_lr_ratio: the cosine schedule's floor, as a fraction of the peak lr (in [0, 1]).
    """

    warmup_iterations: int = 0
    kind: str = "constant"
    min_lr_ratio: float = 0.0


@dataclass
class UpdateConfig:
    """Optimisation settings (``trainer.update``).

    Args:
        ppo_epochs: passes over the iteration's rows.
        mini_batch_size: rows per optimizer step; None: the whole batch.
        micro_batch_size: distinct states per forward/backward (in choose mode a group's copies in
            the same state share one forward).
        max_grad_norm: gradient-norm clip.
        frozen_prefix: start every update forward at the lowest trainable block, from the states the
            rollout computed (``lamina.agents.prefix``).
    """

    ppo_epochs: int = 1
    mini_batch_size: int | None = None
    micro_batch_size: int = 8
    max_grad_norm: float = 1.0
    frozen_prefix: bool = True


@dataclass
class VerlBackendConfig:
    """``verl`` config section: what only the verl backend needs.

    Args:
        ray_address: a Ray cluster (``ray://host:10001`` or ``auto``); None starts a local Ray.
        nnodes, n_gpus_per_node: the GPUs verl spreads actor, reference and rollout over.
        rollout_engine: verl's rollout server (``vllm`` or ``sglang``).
        tensor_parallel_size: rollout tensor parallelism.
        gpu_memory_utilization: the rollout server's share of GPU memory.
        max_prompt_length, max_response_length: token budgets of one step's prompt and response.
        mini_batches: optimizer steps per iteration (the step rows are cut into this many).
        micro_batch_size: rows per forward/backward on one GPU.
        strategy: verl's FSDP flavour for actor and reference (``fsdp2`` or ``fsdp``).
        gradient_checkpointing: recompute activations in the backward pass.
        attn_implementation: HF attention kernel of the trained model: ``auto`` (``flash_attention_2``
            where the ``flash_attn`` package is installed, else ``sdpa``), ``flash_attention_2``,
            ``sdpa`` or ``eager``.
        logger: verl's trackers (``console``, ``wandb``, ``tensorboard``...).
        weight_sync: what each weight sync after the first sends to the rollout servers:
            ``trainable`` (only the trained tensors; needs servers that keep their weights between
            syncs, ``actor_rollout_ref.rollout.free_cache_engine=false``), ``all``, or ``auto``
            (``trainable`` where the servers keep their weights, else ``all``).
        overrides: raw verl config overrides applied last, e.g. ``["trainer.val_before_train=false"]``.
    """

    ray_address: str | None = None
    nnodes: int = 1
    n_gpus_per_node: int = 8
    rollout_engine: str = "vllm"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.6
    max_prompt_length: int = 2048
    max_response_length: int = 512
    mini_batches: int = 4
    micro_batch_size: int = 8
    strategy: str = "fsdp2"
    gradient_checkpointing: bool = True
    attn_implementation: str = "auto"
    logger: list[str] = field(default_factory=lambda: ["console"])
    weight_sync: str = "auto"
    overrides: list[str] = field(default_factory=list)


@dataclass
class EnvConfig:
    """``env`` config group.

    Args:
        name: short name (``textworld``) or Gymnasium id (``lamina/TextWorld-v0``).
        max_steps: steps per episode before truncation.
        kwargs: passed to the environment's constructor.
        train_tasks: training tasks are the seeds 0..train_tasks-1 (None: any seed below 2**31).
        eval_seed_offset: evaluation tasks use seeds from here on, apart from training seeds.
        eval_kwargs: merged over ``kwargs`` for the evaluation environments (e.g. another split).
            Empty: the held-out tasks are the seeds from ``eval_seed_offset`` on, and training
            seeds stay below it.
        required_kwargs: constructor arguments that must be set (in ``kwargs`` and, merged, for
            evaluation), checked before any work starts.
    """

    name: str = "textworld"
    max_steps: int = 8
    kwargs: dict[str, Any] = field(default_factory=dict)
    train_tasks: int | None = None
    eval_seed_offset: int = 100_000
    eval_kwargs: dict[str, Any] = field(default_factory=dict)
    required_kwargs: list[str] = field(default_factory=list)


@dataclass
class AlgorithmConfig:
    """``algorithm`` config group: the advantage estimator and its loss.

    Args:
        estimator: a registered estimator (``grpo``, ``gigpo``, ``rloo``, ``reinforce_pp``).
        needs_groups: the estimator compares trajectories within a group (group_size >= 2).
        norm: ``std`` or ``none`` (Dr. GRPO / "w/o std").
        gamma, step_weight, episode_stats, anchor_similarity: GiGPO's options.
        loss: the policy loss settings.
    """

    estimator: str = "grpo"
    needs_groups: bool = True
    norm: str = "std"
    gamma: float = 0.95
    step_weight: float = 1.0
    episode_stats: str = "steps"
    anchor_similarity: float | None = None
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class TrainerConfig:
    """``trainer`` config group.

    Args:
        iterations: rollout -> update cycles.
        seed: seeds torch, task sampling and environments.
        output_dir: where config, metrics, checkpoints and eval results go.
        save_every: iterations between checkpoints (the last iteration is always saved).
        keep_checkpoints: keep only the N newest good checkpoints (0: keep all).
        resume: continue from the newest good checkpoint in ``output_dir`` (a folder that already
            holds a run is refused unless ``resume`` or ``overwrite``).
        overwrite: delete the run that ``output_dir`` holds (checkpoints, metrics, evaluations,
            plots, logs) before this one starts; false refuses a folder that already holds a run.
        lr, weight_decay: AdamW settings.
        lr_multipliers: per-block lr factors, e.g. ``{15: 2.0}`` (block 15 learns at twice ``lr``).
        train_embeddings, train_lm_head: also train these (frozen by default).
        update: PPO epochs and batching of the update (``UpdateConfig``).
        schedule: the learning-rate schedule (linear warm-up, then constant or cosine).
        progress: show a live progress bar (on a terminal; elsewhere one line per iteration).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        max_skipped_steps: stop after this many optimizer steps in a row were skipped for a
            non-finite loss or gradient.
    """

    iterations: int = 4
    seed: int = 0
    output_dir: str = "runs/default"
    save_every: int = 0
    keep_checkpoints: int = 0
    resume: bool = False
    overwrite: bool = False
    lr: float = 1e-5
    weight_decay: float = 0.0
    lr_multipliers: dict[int, float] = field(default_factory=dict)
    train_embeddings: bool = False
    train_lm_head: bool = False
    update: UpdateConfig = field(default_factory=UpdateConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    progress: bool = True
    device: str = "auto"
    max_skipped_steps: int = 3


@dataclass
class EvalConfig:
    """``eval`` config group: held-out episodes (seeds from ``env.eval_seed_offset``, or the
    environment's held-out split through ``env.eval_kwargs``).

    Args:
        episodes: held-out episodes after training (0 skips evaluation).
        temperature: sampling temperature (0: greedy).
        base: also evaluate the untrained model before iteration 0 (``eval_base.json``).
        every: evaluate every N iterations during training (rows with ``kind: "eval"`` in
            ``metrics.jsonl``); 0: only at the end.
    """

    episodes: int = 8
    temperature: float = 0.4
    base: bool = True
    every: int = 0


@dataclass
class RunConfig:
    """Everything ``lamina train`` reads.

    Args:
        env: the environment section (``env=<option>`` picks a file of ``configs/env/``).
        algorithm: the advantage estimator and its loss (``algorithm=<option>``).
        model: the model to train (``model=<option>``, or ``model.path=`` any HF id or folder).
        rollout: group and batch sizes, sampling, the invalid-action penalty, env workers.
        agent: how observations become prompts and model text becomes actions.
        trainer: iterations, optimiser, checkpoints, device.
        eval: held-out evaluation.
        logging: experiment trackers and the curves plot.
        layers: which transformer blocks the update touches (``lamina.trainer.layers``): ``[14]``,
            ``[10,11,12]``, ``10-14``, ``middle:K``, ``top:K@<sweep dir>``, ``all``, ``none``; or
            ``lora:R@<one of those>`` (``lora:R``: every block): rank-R LoRA adapters on those blocks'
            linear layers train instead (``lamina.trainer.lora``; quote a list: ``'lora:2@[3,5]'``).
        modules: narrows the chosen blocks to ``attn``, ``mlp``, ``norm``, or a regex over parameter
            names inside a block; ``all``: every parameter of the block.
        backend: ``native`` (this process) or ``verl`` (Ray + FSDP + vLLM, the ``verl`` section);
            ``lamina.backend`` dispatches.
        verl: what only the verl backend reads (``backend=verl``).
        init_from: a finished run or checkpoint folder (e.g. from ``lamina sft``) whose trained
            tensors this run starts from; None: the base model.
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    agent: PromptConfig = field(default_factory=PromptConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    layers: Any = "middle:1"
    modules: str = "all"
    backend: str = "native"
    verl: VerlBackendConfig = field(default_factory=VerlBackendConfig)
    init_from: str | None = None


@dataclass
class SftConfig:
    """``sft`` config group.

    Args:
        episodes: expert episodes, on distinct random training seeds (at most ``env.train_tasks``).
        epochs: passes over the expert rows.
        lr: AdamW learning rate (``trainer.lr_multipliers`` scale it per block).
        batch_size: rows per optimizer step.
        micro_batch_size: rows per forward/backward.
        max_grad_norm: gradient-norm clip.
        weight_decay: AdamW weight decay.
        seed: the shuffling seed.
        parallel_envs: environments stepped together while the expert plays.
        measure_loss: also compute the loss on all expert rows before and after training
            (``sft.json``: ``initial_loss``, ``final_loss``; one extra forward over the rows each).
        output_dir: where config, metrics and the checkpoint go.
        overwrite: delete what ``output_dir`` holds from an earlier ``lamina sft`` first; false
            refuses a folder that is not empty.
    """

    episodes: int = 32
    epochs: int = 2
    lr: float = 1e-4
    batch_size: int = 8
    micro_batch_size: int = 4
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    parallel_envs: int = 8
    measure_loss: bool = True
    output_dir: str = "runs/sft"
    overwrite: bool = False


@dataclass
class SftRunConfig(RunConfig):
    """Everything ``lamina sft`` reads: the training config (env, model, agent, layers, ...) plus ``sft``."""

    sft: SftConfig = field(default_factory=SftConfig)
