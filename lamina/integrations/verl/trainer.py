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
sleep -> rewards -> advantages over the step rows (GiGPO through verl's registry, with the rows'
``traj_uid``/``step_id``/``anchor``; the other estimators through lamina's) -> filler rows up to
a count every verl call accepts (``pad_step_rows``: data-parallel ranks, micro-batches,
mini-batches) -> old log-probs (actor) and reference log-probs -> ``update_actor`` in
``mini_batches`` mini-batches.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
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
from lamina.integrations.verl.rollout import object_array, play_steps, to_dataproto


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


@dataclass(frozen=True)
class RowSizes:
    """What verl's calls need of a batch's row count, read from verl's config (``of_config``).

    - ``dp``: the actor's data-parallel ranks (world size / Ulysses sequence parallelism). verl's
      dispatch (``make_nd_compute_dataproto_dispatch_fn``) cuts every batch into ``dp`` equal parts.
    - ``group``: ``rollout.n``; ``_update_actor`` sends ``ppo_mini_batch_size x n`` rows per
      mini-batch, so a mini-batch must be a multiple of ``n`` rows.
    - ``ppo_micro``: ``actor.ppo_micro_batch_size_per_gpu``: a rank's mini-batch must divide by it
      (``prepare_micro_batches``; 1 with dynamic batch sizes).
    - ``log_prob_micro``: ``rollout.log_prob_micro_batch_size_per_gpu``: a rank's part of the batch
      must divide by it for old log-probs (1 with dynamic batch sizes).
    - ``ref_dp``, ``ref_micro``: the same two numbers for the reference worker (1, 1 without one).
    """

    dp: int = 1
    group: int = 1
    ppo_micro: int = 1
    log_prob_micro: int = 1
    ref_dp: int = 1
    ref_micro: int = 1

    @classmethod
    def of_config(cls, config: DictConfig, use_reference_policy: bool = True) -> RowSizes:
        arr = config.actor_rollout_ref
        world = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)

        def sp(section: DictConfig) -> int:
            # verl's ActorConfig: the deprecated top-level size wins when > 1, else fsdp_config's
            top = int(section.get("ulysses_sequence_parallel_size", 1) or 1)
            engine = section.get("fsdp_config", {})
            return top if top > 1 else int(engine.get("ulysses_sequence_parallel_size", 1))

        def micro(dynamic: bool, size: Any) -> int:
            return 1 if dynamic else int(size or 1)

        dynamic = bool(arr.actor.get("use_dynamic_bsz", False))
        ref_dp = ref_micro = 1
        if use_reference_policy:
            ref_dp = world // sp(arr.ref)
            ref_micro = micro(
                bool(arr.ref.get("log_prob_use_dynamic_bsz", dynamic)),
                arr.ref.get("log_prob_micro_batch_size_per_gpu"),
            )
        return cls(
            dp=world // sp(arr.actor),
            group=int(arr.rollout.n),
            ppo_micro=micro(dynamic, arr.actor.get("ppo_micro_batch_size_per_gpu")),
            log_prob_micro=micro(
                bool(arr.rollout.get("log_prob_use_dynamic_bsz", dynamic)),
                arr.rollout.get("log_prob_micro_batch_size_per_gpu"),
            ),
            ref_dp=ref_dp,
            ref_micro=ref_micro,
        )

    def rank_unit(self, mini_batches: int) -> int:
        """The smallest L such that a rank holding any multiple c of L rows per mini-batch passes
        every check: c divides by ``ppo_micro``; dp x c by ``group``; the rank's rows,
        ``mini_batches`` x c, by ``log_prob_micro``; the whole batch, ``mini_batches`` x dp x c, by
        ``ref_dp`` x ``ref_micro``."""
        ref = self.ref_dp * self.ref_micro
        return math.lcm(
            self.ppo_micro,
            self.group // math.gcd(self.group, self.dp),
            self.log_prob_micro // math.gcd(self.log_prob_micro, mini_batches),
            ref // math.gcd(ref, mini_batches * self.dp),
        )

    def unit(self, mini_batches: int) -> int:
        """Rows of a mini-batch (all ranks) come in multiples of this: dp x ``rank_unit``."""
        return self.dp * self.rank_unit(mini_batches)


FILLER_KEY = "filler"  # non-tensor column: True on the rows ``pad_rows`` adds


def pad_rows(batch: DataProto, mini_batches: int, unit: int) -> tuple[DataProto, int]:
    """Appends filler rows: N rows -> ``mini_batches`` x (the least multiple of ``unit`` >= N /
    ``mini_batches``) rows. Returns the batch and the rows per mini-batch.

    A filler copies a real row's tokens (so every sequence has tokens for verl's no-padding
    layout) with ``response_mask``, ``advantages``, ``returns`` and the rewards 0: it adds nothing to
    any loss (verl's token modes count response tokens; for the ``seq-mean-*`` modes lamina's
    engine counts the rows with a response token, ``freezing.LayerSelectingFSDPEngine``). Its
    ``uid``, ``traj_uid`` and ``anchor`` are its own, so it joins no GiGPO group, and ``filler`` is
    True; ``meta_info["real_rows"]`` is N. Advantages are computed before (on the real rows);
    recomputing them on the padded batch gives the real rows the same.
    """
    n = len(batch)
    if n == 0:
        raise ValueError("pad_rows: the batch has no rows")
    per_mini = math.ceil(n / (mini_batches * unit)) * unit
    extra = per_mini * mini_batches - n
    batch = DataProto(  # the caller's batch keeps its columns and meta
        batch=batch.batch,
        non_tensor_batch={**batch.non_tensor_batch, FILLER_KEY: object_array([False] * n)},
        meta_info={**batch.meta_info, "real_rows": n},
    )
    if extra == 0:
        return batch, per_mini
    filler = batch.select_idxs(np.arange(extra) % n)
    for key in (
        "response_mask",
        "advantages",
        "returns",
        "token_level_rewards",
        "token_level_scores",
        "rm_scores",
    ):
        if key in filler.batch.keys():
            filler.batch[key] = torch.zeros_like(filler.batch[key])
    nt = filler.non_tensor_batch
    own = [f"lamina-filler-{k}" for k in range(extra)]
    for key, values in (
        ("uid", own),
        ("traj_uid", own),
        ("anchor", [("lamina-filler", k) for k in range(extra)]),
        ("step_id", [0] * extra),
        (FILLER_KEY, [True] * extra),
    ):
        if key in nt:
            nt[key] = object_array(values)
    return DataProto.concat([batch, filler]), per_mini


def spread_order(real: int, mini_batches: int, dp: int, per_mini: int) -> np.ndarray:
    """Where ``pad_rows``'s rows go: the permutation (slot -> row) that spreads the ``real`` real
    rows (0..real-1) evenly over mini-batches, ranks and micro-batches, fillers in between.

    verl gives rank r the r-th of dp equal slices and walks each slice in mini-batches of
    ``per_mini / dp`` rows. Mini-batch m holds the m-th of ``mini_batches`` near-equal consecutive
    runs of the real rows, whatever dp is (so dp=1 and dp=4 train on the same rows per optimizer
    step); rank r gets the r-th near-equal part of that run, spread evenly over its cell, so no
    micro-batch is all fillers while the cell has as many real rows as micro-batches.
    """
    total = mini_batches * per_mini
    cell = per_mini // dp
    if per_mini % dp or real > total:
        raise ValueError(f"spread_order: {real} rows do not fit {mini_batches} x {per_mini} over dp={dp}")
    order = np.full(total, -1, dtype=np.int64)
    nxt = 0
    for m, run in enumerate(_near_equal(real, mini_batches)):
        for r, count in enumerate(_near_equal(run, dp)):
            if count > cell:
                raise ValueError(f"spread_order: {count} rows for a cell of {cell}")
            base = r * mini_batches * cell + m * cell
            for k in range(count):
                order[base + k * cell // count] = nxt
                nxt += 1
    order[order < 0] = np.arange(real, total)
    return order


def _near_equal(n: int, parts: int) -> list[int]:
    """n split into ``parts`` counts differing by at most one, the larger first."""
    return [n // parts + (i < n % parts) for i in range(parts)]


def pad_step_rows(batch: DataProto, sizes: RowSizes, mini_batches: int) -> DataProto:
    """The real step rows plus fillers, in an order every verl call of an iteration accepts.

    Rows: ``mini_batches`` x P where P, the rows per mini-batch, is the least multiple of
    ``sizes.unit(mini_batches)`` = dp x lcm(ppo micro, n / gcd(n, dp), log-prob micro / gcd(.,
    mini_batches), ref dp x ref micro / gcd(., mini_batches x dp)) that holds ceil(N /
    ``mini_batches``) rows. ``mini_batches`` is cut to N when there are fewer rows (a mini-batch
    without a real row would divide by zero tokens). Layout: ``spread_order``; the fillers:
    ``pad_rows``. ``meta_info`` gets ``real_rows``, ``mini_batches`` and ``rows_per_mini_batch``.
    """
    n = len(batch)
    mini_batches = max(1, min(int(mini_batches), n))
    padded, per_mini = pad_rows(batch, mini_batches, sizes.unit(mini_batches))
    padded = padded.select_idxs(spread_order(n, mini_batches, sizes.dp, per_mini))
    padded.meta_info = {**padded.meta_info, "mini_batches": mini_batches, "rows_per_mini_batch": per_mini}
    return padded


def real_row_mask(batch: DataProto) -> np.ndarray:
    """(N,) bool: the rows that are not ``pad_rows`` fillers."""
    flags = batch.non_tensor_batch.get(FILLER_KEY)
    if flags is None:
        return np.ones(len(batch), dtype=bool)
    return ~np.asarray(flags, dtype=bool)


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
        """One rollout -> advantages -> update iteration; returns verl-style metrics.

        Advantages come from the real rows; the batch is padded once (``prepare_batch``), before
        old and reference log-probs, so every verl call sees a row count it accepts. lamina's
        metrics (success, returns, rows) come from the rollout, i.e. real rows only.
        """
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        lamina = self.config.lamina
        seeds = task_seeds(lamina.env, int(lamina.seed), iteration, int(self.config.data.train_batch_size))
        batch = self.async_rollout_manager.play(seeds, uid_prefix=f"it{iteration}-")
        self.weight_sync().sleep_replicas()
        timing["timing_s/gen"] = time.perf_counter() - t0
        rollout_metrics = {f"lamina/{k}": v for k, v in batch.meta_info.pop("rollout").items()}
        batch = self.prepare_batch(batch, iteration)
        rollout_metrics["lamina/filler_rows"] = float(len(batch) - batch.meta_info["real_rows"])
        t1 = time.perf_counter()
        old_log_prob, _ = self._compute_old_log_prob(batch)
        old_log_prob.batch.pop("entropys", None)
        batch = batch.union(old_log_prob)
        if self.use_reference_policy:
            batch = batch.union(self._compute_ref_log_prob(batch))
        timing["timing_s/old_and_ref_log_prob"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        actor_metrics = self.update_actor_over_rows(batch)
        self.weight_sync().update_weights(self.global_steps)
        timing["timing_s/update_actor"] = time.perf_counter() - t2
        return {**rollout_metrics, **actor_metrics, **timing}

    def row_sizes(self) -> RowSizes:
        """What this run's verl calls need of a row count (data parallelism, micro-batches)."""
        return RowSizes.of_config(self.config, use_reference_policy=bool(self.use_reference_policy))

    def prepare_batch(self, batch: DataProto, iteration: int) -> DataProto:
        """The played step rows -> the batch every verl call of the iteration gets.

        Shuffles the rows (mini-batches then mix steps and tasks), sets rewards and advantages on
        the real rows, then pads once with fillers (``pad_step_rows``) and adds verl's meta.
        """
        order = np.random.default_rng([int(self.config.lamina.seed), iteration, 1]).permutation(len(batch))
        batch = batch.select_idxs(order)
        batch.batch["token_level_scores"] = batch.batch["rm_scores"]
        batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
        batch.batch["advantages"] = step_advantages(batch, self.config.algorithm)
        batch.batch["returns"] = batch.batch["advantages"]
        batch = pad_step_rows(batch, self.row_sizes(), int(self.config.lamina.mini_batches))
        batch.meta_info["temperature"] = float(self.config.actor_rollout_ref.rollout.temperature)
        batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
        return batch

    def update_actor_over_rows(self, batch: DataProto) -> dict[str, float]:
        """verl's ``_update_actor`` over step rows, in ``meta_info["mini_batches"]`` mini-batches.

        verl sizes a mini-batch as ``ppo_mini_batch_size x rollout.n`` rows; the driver sets
        ``ppo_mini_batch_size`` for this iteration's padded row count (workers read the size from
        the batch). A batch that ``prepare_batch`` did not pad is padded here.
        """
        from verl.utils.metric import reduce_metrics

        if "rows_per_mini_batch" not in batch.meta_info:
            batch = pad_step_rows(batch, self.row_sizes(), int(self.config.lamina.mini_batches))
            batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
        per_mini = int(batch.meta_info["rows_per_mini_batch"])
        with open_dict(self.config):
            self.config.actor_rollout_ref.actor.ppo_mini_batch_size = per_mini // int(
                self.config.actor_rollout_ref.rollout.n
            )
        output = self._update_actor(batch)
        metrics = output.meta_info["metrics"]
        require_layer_selection(metrics, self.config.lamina.get("layers"))
        return reduce_metrics(metrics)


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
