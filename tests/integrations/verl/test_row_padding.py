"""Filler rows so that every verl call of an iteration accepts the step rows (fast, no Ray).

verl's dispatch cuts a batch into dp equal parts (``chunk_tensordict`` asserts the row count
divides), and with fixed micro-batches a rank's rows, and each rank's mini-batch, must divide by the
micro-batch size (``prepare_micro_batches``). A per-step batch has any number of rows (episodes end
early). ``pad_step_rows`` adds filler rows that change no loss and no advantage; these tests check
its arithmetic against brute force and against verl's own splitting functions, and one
``StepPPOTrainer.train_step`` against worker groups that run verl's checks.
"""

from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lamina.integrations.verl.rollout import StepRows, to_dataproto
from lamina.integrations.verl.trainer import (
    RowSizes,
    StepPPOTrainer,
    pad_step_rows,
    real_row_mask,
    spread_order,
    step_advantages,
)


def step_rows(lengths: list[int], group_size: int, seed: int = 0) -> StepRows:
    """Trajectory t (copy t % G of task t // G) plays ``lengths[t]`` steps; copies of a task share
    anchors step by step half of the time (so GiGPO's step groups have members)."""
    rng = np.random.default_rng(seed)
    records = []
    for t, length in enumerate(lengths):
        for s in range(length):
            anchor = ("room", t // group_size, s) if rng.random() < 0.5 else ("alone", t, s)
            records.append((t // group_size, t, s, anchor, float(rng.normal())))
    n, n_traj = len(records), len(lengths)
    return StepRows(
        prompt_ids=[[5 + int(rng.integers(0, 50)) for _ in range(int(rng.integers(2, 7)))] for _ in range(n)],
        response_ids=[
            [60 + int(rng.integers(0, 50)) for _ in range(int(rng.integers(1, 5)))] for _ in range(n)
        ],
        response_log_probs=[None] * n,
        rewards=np.array([r[4] for r in records]),
        group_uids=[f"g{r[0]}" for r in records],
        traj_uids=[f"t{r[1]}" for r in records],
        step_ids=np.array([r[2] for r in records]),
        anchors=[r[3] for r in records],
        action_valid=np.ones(n, dtype=bool),
        episode_returns=rng.normal(size=n_traj),
        episode_won=rng.random(n_traj) < 0.5,
        episode_lengths=np.asarray(lengths, dtype=float),
    )


def algorithm(estimator: str):
    return OmegaConf.create({"adv_estimator": estimator, "norm_adv_by_std_in_grpo": True, "gigpo": {}})


def with_advantages(rows: StepRows, estimator: str = "gigpo"):
    batch = to_dataproto(rows, 0, max_prompt_length=16, max_response_length=8)
    batch.non_tensor_batch["row_id"] = np.arange(len(batch), dtype=object)
    batch.batch["token_level_scores"] = batch.batch["rm_scores"]
    batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
    batch.batch["advantages"] = step_advantages(batch, algorithm(estimator))
    batch.batch["returns"] = batch.batch["advantages"]
    return batch


def micro_batches_of(part, size: int):
    """verl's worker-side split of a rank's rows into micro-batches of ``size`` (fixed sizes); a
    rank receives its part as its own TensorDict (Ray copies it), here a clone of the chunk."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    part = part.clone()
    tu.assign_non_tensor(part, use_dynamic_bsz=False, micro_batch_size_per_gpu=size)
    return prepare_micro_batches(part)[0]


def gigpo_run_config():
    from lamina.trainer.config import RunConfig

    cfg = RunConfig()
    cfg.algorithm.estimator, cfg.algorithm.loss.kl_coef = "gigpo", 0.01
    cfg.agent.mode, cfg.layers = "generate", [1]
    cfg.rollout.batch_size, cfg.rollout.group_size = 4, 2
    return cfg


def valid_cell(c: int, sizes: RowSizes, mini_batches: int) -> bool:
    """verl's conditions on c rows per rank per mini-batch, written out."""
    total = mini_batches * sizes.dp * c
    return (
        c % sizes.ppo_micro == 0  # a rank's mini-batch in whole micro-batches
        and (sizes.dp * c) % sizes.group == 0  # ppo_mini_batch_size x n rows per mini-batch
        and (mini_batches * c) % sizes.log_prob_micro == 0  # a rank's rows, old log-probs
        and total % (sizes.ref_dp * sizes.ref_micro) == 0  # the reference worker's split
    )


SIZES = [
    RowSizes(dp=dp, group=g, ppo_micro=pm, log_prob_micro=lm, ref_dp=dp, ref_micro=rm)
    for dp, g, pm, lm, rm in itertools.product((1, 2, 4), (1, 2, 3, 8), (1, 2, 3, 4), (1, 4, 8), (1, 2, 8))
]


def test_rank_unit_is_the_least_cell_every_check_accepts():
    for sizes, mini_batches in itertools.product(SIZES, (1, 2, 3, 4)):
        unit = sizes.rank_unit(mini_batches)
        for c in range(1, 3 * unit + 1):
            assert valid_cell(c, sizes, mini_batches) == (c % unit == 0), (sizes, mini_batches, c)


@pytest.mark.parametrize("n", [1, 5, 9, 12, 33, 67])
def test_spread_order_fills_every_mini_batch_the_same_way_for_any_dp(n):
    for sizes, mini_batches in itertools.product(SIZES, (1, 2, 3, 4)):
        mb = min(mini_batches, n)
        unit = sizes.unit(mb)
        per_mini = math.ceil(n / (mb * unit)) * unit
        assert (per_mini - unit) * mb < n <= per_mini * mb  # the least padding of this shape
        order = spread_order(n, mb, sizes.dp, per_mini)
        assert sorted(order.tolist()) == list(range(mb * per_mini))
        cell = per_mini // sizes.dp
        assert valid_cell(cell, sizes, mb)
        runs = np.cumsum([0] + [n // mb + (m < n % mb) for m in range(mb)])
        for m in range(mb):
            # mini-batch m = cell m of every rank's slice; it holds the m-th run of real rows
            slots = [r * mb * cell + m * cell + j for r in range(sizes.dp) for j in range(cell)]
            real = sorted(int(i) for i in order[slots] if i < n)
            assert real == list(range(runs[m], runs[m + 1]))
            for r in range(sizes.dp):
                mine = order[r * mb * cell + m * cell : r * mb * cell + (m + 1) * cell]
                per_micro = (mine < n).reshape(-1, sizes.ppo_micro).sum(1)
                assert per_micro.max() - per_micro.min() <= 1  # real rows spread over micro-batches


@pytest.mark.parametrize("dp", [1, 2, 4])
@pytest.mark.parametrize(
    ("ppo_micro", "log_prob_micro", "mini_batches"), [(1, 1, 1), (4, 4, 1), (2, 8, 2), (3, 4, 3)]
)
@pytest.mark.parametrize("lengths", [[3, 1, 2, 5], [1, 1, 1, 2, 4, 3]])  # 11 and 12 rows
def test_verl_splits_accept_the_padded_batch(dp, ppo_micro, log_prob_micro, mini_batches, lengths):
    """The padded batch through verl's own functions: the dispatch split into dp parts, each rank's
    micro-batches for log-probs, and each rank's mini-batches and their micro-batches for the update."""
    from verl.single_controller.base.decorator import _split_args_kwargs_data_proto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    group = 2
    sizes = RowSizes(
        dp=dp, group=group, ppo_micro=ppo_micro, log_prob_micro=log_prob_micro, ref_dp=dp, ref_micro=2
    )
    batch = with_advantages(step_rows(lengths, group))
    n = len(batch)
    padded = pad_step_rows(batch, sizes, mini_batches)
    per_mini = padded.meta_info["rows_per_mini_batch"]
    assert padded.meta_info["real_rows"] == n and real_row_mask(padded).sum() == n

    def split(data):
        td = left_right_2_no_padding(data.to_tensordict())
        ((parts,), _) = _split_args_kwargs_data_proto(dp, td)
        return parts

    for part in split(padded):  # old (actor) and reference log-probs
        for micro in (log_prob_micro, 2):
            micro_batches_of(part, micro)
    ids_per_mini = []
    for part in split(padded):  # the update: mini-batches of per_mini / dp rows per rank
        minis = list(tu.make_iterator(part, mini_batch_size=per_mini // dp, epochs=1))
        assert len(minis) == padded.meta_info["mini_batches"]
        for mini in minis:
            micro_batches_of(mini, ppo_micro)
        real_ids = [zip(mini["row_id"], mini["filler"], strict=True) for mini in minis]
        ids_per_mini.append([sorted(i for i, filler in pairs if not filler) for pairs in real_ids])
    # the same real rows in each optimizer step on every dp (here: the runs of the dp=1 layout)
    one = pad_step_rows(with_advantages(step_rows(lengths, group)), RowSizes(group=group), mini_batches)
    runs = np.asarray(one.non_tensor_batch["row_id"])[real_row_mask(one)]
    mb = one.meta_info["mini_batches"]
    for m in range(mb):
        got = sorted(i for rank in ids_per_mini for i in rank[m])
        cuts = np.cumsum([0] + [n // mb + (k < n % mb) for k in range(mb)])
        assert got == sorted(runs[cuts[m] : cuts[m + 1]].tolist())

    with pytest.raises(AssertionError, match="divisible"):  # unpadded, verl refuses (dp 1: micro-batches)
        for part in split(batch) if dp > 1 else [left_right_2_no_padding(batch.to_tensordict())]:
            micro_batches_of(part, 5)


@pytest.mark.parametrize("estimator", ["gigpo", "grpo"])
@pytest.mark.parametrize("dp", [1, 2, 4])
def test_fillers_change_no_real_row_and_no_advantage(estimator, dp):
    rows = step_rows([3, 1, 2, 5, 1, 1, 4, 2], 2, seed=dp)
    batch = with_advantages(rows, estimator)
    n = len(batch)
    before = {k: v.clone() for k, v in batch.batch.items()}
    padded = pad_step_rows(batch, RowSizes(dp=dp, group=2, ppo_micro=4, log_prob_micro=8), 3)
    real = real_row_mask(padded)
    ids = np.asarray(padded.non_tensor_batch["row_id"])[real].astype(int)
    back = np.argsort(ids)
    assert len(padded) > n and ids.tolist() != [] and sorted(ids.tolist()) == list(range(n))
    for key, value in before.items():  # every tensor of a real row is what it was
        assert torch.equal(padded.batch[key][real][back], value), key
    fill = ~real
    zeroed = (
        "response_mask",
        "advantages",
        "returns",
        "token_level_rewards",
        "token_level_scores",
        "rm_scores",
    )
    for key in zeroed:
        assert padded.batch[key][fill].abs().sum() == 0, key
    assert torch.all(padded.batch["attention_mask"][fill].sum(-1) > 0)  # tokens for verl's no-padding layout
    nt = padded.non_tensor_batch
    for key in ("uid", "traj_uid", "anchor"):
        fillers = [nt[key][i] for i in np.flatnonzero(fill)]
        reals = {nt[key][i] for i in np.flatnonzero(real)}
        assert len(set(fillers)) == len(fillers) and not set(fillers) & reals
    # advantages recomputed on the padded batch: the real rows' are unchanged, the fillers' are 0
    again = step_advantages(padded, algorithm(estimator))
    torch.testing.assert_close(again[real][back], before["advantages"], rtol=1e-6, atol=1e-7)
    assert again[fill].abs().sum() == 0


def test_too_few_rows_for_the_mini_batches_still_trains_every_mini_batch():
    batch = with_advantages(step_rows([1, 1], 2))
    padded = pad_step_rows(batch, RowSizes(dp=2, group=2, ppo_micro=2, log_prob_micro=2), 4)
    assert padded.meta_info["mini_batches"] == 2
    assert len(padded) == 2 * padded.meta_info["rows_per_mini_batch"]


def test_row_sizes_read_from_the_composed_config():
    from lamina.integrations.verl.config import VerlBackendConfig
    from lamina.integrations.verl.launch import validate

    cfg = gigpo_run_config()
    verl_cfg = VerlBackendConfig(
        n_gpus_per_node=8,
        micro_batch_size=4,
        overrides=[
            "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        ],
    )
    config = validate(cfg, verl_cfg, model_path="/models/none")
    sizes = RowSizes.of_config(config)
    assert sizes == RowSizes(dp=4, group=2, ppo_micro=4, log_prob_micro=8, ref_dp=4, ref_micro=4)
    assert RowSizes.of_config(config, use_reference_policy=False).ref_micro == 1


# --- one train_step against worker groups that run verl's checks -------------------------------


class VerlChecksWorkerGroup:
    """``actor_rollout_wg`` / ``ref_policy_wg`` stand-in: verl's dispatch split into dp parts, then
    each rank's micro-batch (and mini-batch) split, as verl's workers do; answers zeros."""

    def __init__(self, dp: int, log_prob_micro: int, ppo_micro: int):
        self.dp, self.log_prob_micro, self.ppo_micro = dp, log_prob_micro, ppo_micro
        self.calls: list[tuple[str, int]] = []
        self.updated = None

    def _parts(self, td):
        from verl.single_controller.base.decorator import _split_args_kwargs_data_proto

        ((parts,), _) = _split_args_kwargs_data_proto(self.dp, td)
        return parts

    def _log_probs(self, name, td):
        from verl.utils import tensordict_utils as tu

        self.calls.append((name, len(td)))
        for part in self._parts(td):
            micro_batches_of(part, self.log_prob_micro)
        ids = td["input_ids"]
        zeros = torch.nested.nested_tensor_from_jagged(torch.zeros(ids.values().shape), offsets=ids.offsets())
        tensors = {"log_probs": zeros, "entropy": zeros}
        return tu.get_tensordict(tensors, non_tensor_dict={"metrics": {"mfu": 0.0}})

    def compute_log_prob(self, td):
        return self._log_probs("old", td)

    def compute_ref_log_prob(self, td):
        return self._log_probs("ref", td)

    def update_actor(self, td):
        from verl.utils import tensordict_utils as tu

        self.calls.append(("update", len(td)))
        mini = tu.get(td, "mini_batch_size")
        assert mini % self.dp == 0
        for part in self._parts(td):
            for batch in tu.make_iterator(part, mini_batch_size=mini // self.dp, epochs=1):
                micro_batches_of(batch, self.ppo_micro)
        self.updated = td
        # as lamina's layer-selecting engine reports it (the driver stops a run without it)
        metrics = {"mfu": [0.0], "pg_loss": [0.5], "lamina_trainable_tensors": [9.0]}
        return tu.get_tensordict({}, non_tensor_dict={"metrics": metrics})


class FixedRollout:
    def __init__(self, rows: StepRows):
        self.rows = rows

    def play(self, seeds, uid_prefix):
        return to_dataproto(self.rows, 0, max_prompt_length=16, max_response_length=8)


FIVE, TWELVE = [1, 1, 1, 2], [3, 1, 2, 1, 1, 1, 2, 1]  # steps per trajectory: 5 and 12 rows


@pytest.mark.parametrize(
    ("dp", "micro", "mini_batches", "lengths"),
    [(2, 1, 1, FIVE), (1, 4, 1, FIVE), (1, 4, 2, TWELVE), (4, 2, 2, FIVE), (2, 4, 4, TWELVE)],
)
def test_train_step_pads_once_before_old_and_ref_log_probs(dp, micro, mini_batches, lengths):
    """Before the fix: dp=2 with 5 rows failed in verl's dispatch ("expecting td with length
    divisible by chunks, but got 5 and 2"); dp=1 with micro-batches of 4 failed in
    ``prepare_micro_batches``, for old log-probs at 5 rows and for the update at 12 rows in 2
    mini-batches."""
    from lamina.integrations.verl.config import VerlBackendConfig
    from lamina.integrations.verl.launch import validate

    cfg = gigpo_run_config()
    config = validate(
        cfg,
        VerlBackendConfig(n_gpus_per_node=dp, micro_batch_size=micro, mini_batches=mini_batches),
        model_path="/models/none",
    )
    rows = step_rows(lengths, 2)
    trainer = object.__new__(StepPPOTrainer)
    wg = VerlChecksWorkerGroup(dp, micro, micro)
    trainer.config, trainer.actor_rollout_wg, trainer.ref_policy_wg = config, wg, wg
    trainer.use_reference_policy, trainer.ref_in_actor, trainer.distillation_config = True, False, None
    trainer.global_steps = 1
    trainer.async_rollout_manager = FixedRollout(rows)
    trainer.checkpoint_manager = types.SimpleNamespace(
        sleep_replicas=lambda: None, update_weights=lambda step: None
    )
    record = trainer.train_step(0)
    n = len(rows)
    total = wg.calls[0][1]
    assert [name for name, _ in wg.calls] == ["old", "ref", "update"] and {k for _, k in wg.calls} == {total}
    assert record["lamina/rows"] == n and record["lamina/filler_rows"] == total - n  # metrics: real rows
    assert record["lamina/success_rate"] == pytest.approx(rows.metrics()["success_rate"])
    assert record["actor/pg_loss"] == 0.5
    per_mini = config.actor_rollout_ref.actor.ppo_mini_batch_size * 2
    assert total % per_mini == 0 and total // per_mini == min(mini_batches, n)
    filler = np.asarray(list(wg.updated["filler"]), dtype=bool)
    assert filler.sum() == total - n
    for key in ("response_mask", "advantages"):
        assert wg.updated[key][filler].abs().sum() == 0 and wg.updated[key][~filler].abs().sum() > 0
