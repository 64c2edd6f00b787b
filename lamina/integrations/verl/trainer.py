"""lamina's per-step PPO loop as an extension of verl's ``RayPPOTrainer`` (DataProto trainer).

verl's ``fit`` joins each rollout output to its prompt row (one row per trajectory), so a batch
with one row per (trajectory, step) cannot pass through it. ``StepPPOTrainer`` keeps everything
else of verl: worker groups and resource pools (``init_workers``), rollout servers and weight
sync (``checkpoint_manager``), ``_compute_old_log_prob``, ``_compute_ref_log_prob``,
``_update_actor``, checkpoints and trackers. It overrides two methods: ``_create_dataloader``
(tasks are environment seeds, no parquet) and ``fit`` (below, top to bottom).

The rollout sits in verl's own slot for a custom rollout manager,
``actor_rollout_ref.rollout.agent.agent_loop_manager_class``: ``StepRolloutManager`` receives
verl's ``LLMServerClient`` and plays lamina environments with ``rollout.play_steps``.

One iteration: sync weights to the servers -> play B x G episodes (one row per step) -> servers
sleep -> old log-probs (actor) and reference log-probs -> rewards -> advantages over step rows
(GiGPO through verl's registry, with the rows' ``traj_uid``/``step_id``/``anchor``; the other
estimators through lamina's) -> ``update_actor`` in ``mini_batches`` mini-batches.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from lamina.agents.prompt import PromptConfig
from lamina.algorithms.advantages import estimator_of_verl_name, get_estimator
from lamina.envs.seeds import task_seeds
from lamina.integrations.verl.config import plain_dict
from lamina.integrations.verl.freezing import TRAINABLE_METRIC
from lamina.integrations.verl.rollout import play_steps, to_dataproto


def step_advantages(batch: DataProto, algorithm: DictConfig) -> torch.Tensor:
    """Advantages (N, R) over step rows: the row advantage on each response token.

    GiGPO goes through verl's estimator registry (lamina's registered ``gigpo``), given the rows'
    ``non_tensor_batch``; GRPO/RLOO/REINFORCE++ use lamina's estimators over the rows, because
    verl's would treat each step's reward as an episode's.
    """
    rewards = batch.batch["token_level_rewards"]
    mask = batch.batch["response_mask"]
    name = str(algorithm.adv_estimator)
    if name == "gigpo":
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn

        advantages, _ = get_adv_estimator_fn("gigpo")(
            token_level_rewards=rewards,
            response_mask=mask,
            index=batch.non_tensor_batch["uid"],
            config=algorithm,
            non_tensor_batch=batch.non_tensor_batch,
        )
        return advantages
    estimator = get_estimator(estimator_of_verl_name(name))
    nt = batch.non_tensor_batch
    row = estimator(
        (rewards.double() * mask).sum(-1).numpy(),  # float64 before the sum: no rounding to undo
        list(nt["traj_uid"]),
        np.asarray(nt["step_id"], dtype=np.int64),
        list(nt["uid"]),
        list(nt["anchor"]),
        norm="std" if algorithm.get("norm_adv_by_std_in_grpo", True) else "none",
    )
    return torch.as_tensor(row, dtype=rewards.dtype)[:, None] * mask


def pad_rows(batch: DataProto, mini_batches: int, unit: int) -> tuple[DataProto, int]:
    """Pads N rows to ``mini_batches`` x (a multiple of ``unit``) rows with masked-out copies.

    A copy has ``response_mask`` and ``advantages`` 0, so it adds nothing to a token-mean loss
    (verl's per-sequence aggregations count it as one more sequence). Returns the batch and the
    rows per mini-batch.
    """
    n = len(batch)
    per_mini = math.ceil(n / (mini_batches * unit)) * unit
    extra = per_mini * mini_batches - n
    if extra == 0:
        return batch, per_mini
    filler = batch.select_idxs(np.arange(extra) % n)
    for key in ("response_mask", "advantages", "returns", "token_level_rewards", "token_level_scores"):
        if key in filler.batch.keys():
            filler.batch[key] = torch.zeros_like(filler.batch[key])
    return DataProto.concat([batch, filler]), per_mini


class StepRolloutManager:
    """verl's rollout-manager slot filled with lamina's per-step rollout.

    verl builds it with ``create(config=..., llm_client=..., ...)``; ``play`` is called by
    ``StepPPOTrainer.fit``. Environments live in this (the trainer's) process, in
    ``rollout.env_workers`` worker processes.
    """

    def __init__(self, config: DictConfig, llm_client: Any, tokenizer: Any = None, runner: Any = None):
        self.config = config
        self.client = llm_client
        self.lamina = config.lamina
        if tokenizer is None:
            from verl.utils import hf_tokenizer

            tokenizer = hf_tokenizer(config.actor_rollout_ref.model.path)
        self.tokenizer = tokenizer
        self._runner = runner

    @classmethod
    def create(
        cls, config: DictConfig, llm_client: Any, teacher_client=None, reward_loop_worker_handles=None
    ):
        return cls(config, llm_client)

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        raise NotImplementedError(
            "lamina's per-step rollout is driven by StepPPOTrainer.fit (one row per step), not by "
            "verl's prompt dataloader; launch with lamina train backend=verl"
        )

    @property
    def runner(self):
        if self._runner is None:
            from lamina.envs.runner import EnvGroupRunner

            rollout = self.config.actor_rollout_ref.rollout
            env = self.lamina.env
            self._runner = EnvGroupRunner(
                env.name,
                int(self.config.data.train_batch_size) * int(rollout.n),
                num_workers=int(self.lamina.rollout.env_workers),
                env_kwargs=plain_dict(env.kwargs),
                max_episode_steps=int(env.max_steps),
            )
        return self._runner

    def sampling_params(self, validate: bool = False) -> dict[str, Any]:
        rollout = self.config.actor_rollout_ref.rollout
        source = rollout.val_kwargs if validate else rollout
        params = {
            "temperature": float(source.temperature),
            "top_p": float(source.top_p),
            "top_k": int(source.top_k),
            "logprobs": True,
            "max_tokens": int(self.config.data.max_response_length),
        }
        if validate and not rollout.val_kwargs.do_sample:
            params.update(temperature=0.0, top_p=1.0, top_k=-1)
        return params

    def play_rows(self, runner, seeds: list[int], group_size: int, uid_prefix: str, validate: bool = False):
        """``rollout.play_steps`` with this run's prompt, sampling and penalty settings."""
        agent = PromptConfig(**plain_dict(self.lamina.agent))
        return asyncio.run(
            play_steps(
                self.client,
                self.tokenizer,
                runner,
                seeds,
                group_size,
                max_steps=int(self.lamina.env.max_steps),
                prompt_cfg=agent,
                sampling_params=self.sampling_params(validate),
                invalid_penalty=float(self.lamina.rollout.invalid_penalty),
                uid_prefix=uid_prefix,
                max_prompt_length=int(self.config.data.max_prompt_length),
            )
        )

    def play(self, seeds: list[int], uid_prefix: str) -> DataProto:
        """B tasks x G copies (G = ``rollout.n``) -> a DataProto of step rows."""
        rows = self.play_rows(self.runner, seeds, int(self.config.actor_rollout_ref.rollout.n), uid_prefix)
        data = self.config.data
        return to_dataproto(
            rows,
            self.tokenizer.pad_token_id,
            max_prompt_length=int(data.max_prompt_length),
            max_response_length=int(data.max_response_length),
        )

    def evaluate(self, episodes: int) -> dict[str, Any]:
        """Held-out episodes (seeds from ``env.eval_seed_offset``, ``env.eval_kwargs``) at the
        evaluation temperature; lamina's ``eval.json`` fields."""
        from lamina.envs.runner import EnvGroupRunner
        from lamina.trainer.evaluate import wilson_interval

        env = self.lamina.env
        kwargs = {
            **plain_dict(env.kwargs),
            **plain_dict(env.eval_kwargs),
        }
        chunk = min(episodes, self.runner.num_envs)
        won: list[bool] = []
        returns: list[float] = []
        workers = int(self.lamina.rollout.env_workers)
        with EnvGroupRunner(
            env.name, chunk, num_workers=workers, env_kwargs=kwargs, max_episode_steps=int(env.max_steps)
        ) as runner:
            for start in range(0, episodes, chunk):
                seeds = [int(env.eval_seed_offset) + i for i in range(start, min(start + chunk, episodes))]
                rows = self.play_rows(runner, seeds, 1, f"eval{start}-", validate=True)
                won += rows.episode_won.tolist()
                returns += rows.episode_returns.tolist()
        return {
            "success_rate": float(np.mean(won)),
            "ci95": wilson_interval(int(sum(won)), len(won)),
            "episodes": len(won),
            "mean_return": float(np.mean(returns)),
        }


class TaskSeedLoader:
    """Stands in for verl's dataloader in checkpoints: task seeds follow from (seed, iteration),
    so there is no state to save and a resumed run draws the same tasks."""

    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


class StepPPOTrainer(RayPPOTrainer):
    """verl's ``RayPPOTrainer`` with a per-step ``fit`` (see the module docstring)."""

    def _create_dataloader(self, train_dataset, val_dataset, collate_fn, train_sampler) -> None:
        """No prompt dataset: an iteration's tasks are environment seeds (``task_seeds``)."""
        self.train_dataset = self.val_dataset = None
        self.total_training_steps = int(self.config.trainer.total_training_steps)
        self.train_dataloader = TaskSeedLoader(self.total_training_steps)
        with open_dict(self.config):
            self.config.actor_rollout_ref.actor.optim.total_training_steps = self.total_training_steps

    def fit(self) -> None:
        from verl.utils.tracking import Tracking

        tracker = Tracking(
            project_name=self.config.trainer.project_name,
            experiment_name=self.config.trainer.experiment_name,
            default_backend=self.config.trainer.logger,
            config=OmegaConf.to_container(self.config, resolve=True),
        )
        out = Path(self.config.lamina.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.global_steps = 0
        self._load_checkpoint()
        self.weight_sync().update_weights(self.global_steps)
        start = self.global_steps
        with (out / "metrics.jsonl").open("a" if start else "w") as metrics_file:
            for iteration in range(start, self.total_training_steps):
                self.global_steps = iteration + 1
                record = self.train_step(iteration)
                tracker.log(data=record, step=self.global_steps)
                metrics_file.write(json.dumps(lamina_record(iteration, record)) + "\n")
                metrics_file.flush()
                save_freq = int(self.config.trainer.save_freq)
                last = self.global_steps == self.total_training_steps
                if save_freq > 0 and (self.global_steps % save_freq == 0 or last):
                    self._save_checkpoint()
        episodes = int(self.config.lamina.get("eval_episodes", 0))
        if episodes > 0:  # the servers hold the last update's weights (synced after it)
            result = self.async_rollout_manager.evaluate(episodes)
            self.weight_sync().sleep_replicas()
            (out / "eval.json").write_text(json.dumps(result, indent=1))
            tracker.log(
                data={f"eval/{k}": v for k, v in result.items() if k != "ci95"}, step=self.global_steps
            )

    def weight_sync(self) -> Any:
        """verl's checkpoint manager, which pushes the actor's weights to the rollout servers."""
        if self.checkpoint_manager is None:
            raise RuntimeError("StepPPOTrainer: call init_workers() first (it builds the weight sync)")
        return self.checkpoint_manager

    def train_step(self, iteration: int) -> dict[str, float]:
        """One rollout -> advantages -> update iteration; returns verl-style metrics."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        lamina = self.config.lamina
        seeds = task_seeds(lamina.env, int(lamina.seed), iteration, int(self.config.data.train_batch_size))
        batch = self.async_rollout_manager.play(seeds, uid_prefix=f"it{iteration}-")
        self.weight_sync().sleep_replicas()
        timing["timing_s/gen"] = time.perf_counter() - t0
        rollout_metrics = {f"lamina/{k}": v for k, v in batch.meta_info.pop("rollout").items()}
        batch = self.prepare_batch(batch, iteration)
        t1 = time.perf_counter()
        old_log_prob, _ = self._compute_old_log_prob(batch)
        old_log_prob.batch.pop("entropys", None)
        batch = batch.union(old_log_prob)
        if self.use_reference_policy:
            batch = batch.union(self._compute_ref_log_prob(batch))
        timing["timing_s/old_and_ref_log_prob"] = time.perf_counter() - t1
        batch.batch["token_level_scores"] = batch.batch["rm_scores"]
        batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
        batch.batch["advantages"] = step_advantages(batch, self.config.algorithm)
        batch.batch["returns"] = batch.batch["advantages"]
        t2 = time.perf_counter()
        actor_metrics = self.update_actor_over_rows(batch)
        self.weight_sync().update_weights(self.global_steps)
        timing["timing_s/update_actor"] = time.perf_counter() - t2
        return {**rollout_metrics, **actor_metrics, **timing}

    def prepare_batch(self, batch: DataProto, iteration: int) -> DataProto:
        """Shuffles the step rows (mini-batches then mix steps and tasks) and adds verl's meta."""
        order = np.random.default_rng([int(self.config.lamina.seed), iteration, 1]).permutation(len(batch))
        batch = batch.select_idxs(order)
        batch.meta_info["temperature"] = float(self.config.actor_rollout_ref.rollout.temperature)
        batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
        return batch

    def update_actor_over_rows(self, batch: DataProto) -> dict[str, float]:
        """verl's ``_update_actor`` over step rows, cut into ``lamina.mini_batches`` mini-batches.

        verl sizes a mini-batch as ``ppo_mini_batch_size x rollout.n`` rows; the driver sets
        ``ppo_mini_batch_size`` for this iteration's row count (workers read the size from the batch).
        """
        from verl.utils.metric import reduce_metrics

        n = int(self.config.actor_rollout_ref.rollout.n)
        dp = int(self.config.trainer.n_gpus_per_node) * int(self.config.trainer.nnodes)
        unit = n * dp // math.gcd(n, dp)
        batch, per_mini = pad_rows(batch, int(self.config.lamina.mini_batches), unit)
        batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
        with open_dict(self.config):
            self.config.actor_rollout_ref.actor.ppo_mini_batch_size = per_mini // n
        output = self._update_actor(batch)
        return reduce_metrics(output.meta_info["metrics"])


def require_layer_selection(metrics: dict[str, Any], layers: Any) -> None:
    """Stops the run when an update with a layer selection did not run on lamina's engine.

    A worker whose lamina plugin failed to import falls back to verl's own FSDP engine (verl only
    logs it) and trains every block; lamina's engine reports ``actor/lamina_trainable_tensors`` with
    every update, so its absence means the selection was not applied.

    Raises:
        RuntimeError: naming the selection and where to look.
    """
    if layers is None or f"actor/{TRAINABLE_METRIC}" in metrics:
        return
    raise RuntimeError(
        f"layers={layers}: the actor update ran on verl's own engine, not lamina's layer-selecting "
        "one, so every block was trained; stopped before these weights reach the rollout servers. "
        "Check that lamina imports in every Ray worker (VERL_USE_EXTERNAL_PLUGINS, the workers' "
        "python environment) and that VERL_ENGINE_VENDOR=lamina reaches them"
    )


def lamina_record(iteration: int, record: dict[str, float]) -> dict[str, float]:
    """A ``metrics.jsonl`` row with lamina's names (success_rate, mean_return, loss, kl, timings)."""
    row: dict[str, float] = {"iteration": iteration}
    for key, value in record.items():
        if key.startswith("lamina/"):
            row[key[len("lamina/") :]] = float(value)
    row["loss"] = float(record.get("actor/pg_loss", record.get("actor/loss", 0.0)))
    row["kl"] = float(record.get("actor/kl_loss", 0.0))
    row["rollout_s"] = float(record.get("timing_s/gen", 0.0))
    row["update_s"] = float(record.get("timing_s/update_actor", 0.0))
    return row
