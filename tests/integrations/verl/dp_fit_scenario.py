"""lamina's per-step verl trainer with two data-parallel ranks on the CPU, in its own process.

Run by ``test_fit_dp.py`` as ``python dp_fit_scenario.py OUT_DIR``. A local Ray with faked GPUs
(``ray.init(num_gpus=3)``; the test CPU platform names "GPU" as its Ray resource) and verl's
``RayWorkerGroup``: first two workers (dp=2: two processes in one gloo group, FSDP2 sharding every
parameter over both), then one (dp=1) on the same rows. Each run is ``StepPPOTrainer.fit`` for one
iteration: GiGPO, KL to a reference model, ``use_remove_padding`` and gradient checkpointing on,
layers=[1] (only block 1 trains), 2 mini-batches, micro-batches of 2 rows.

The dp=2 run plays 2 tasks x 2 copies on ``EarlyEndRunner``, whose episodes end after 3, 1, 3 and 2
steps: 9 rows, which neither 2 ranks nor micro-batches of 2 divide; the unfixed trainer failed there
in verl's dispatch ("expecting td with length divisible by chunks, but got 9 and 2"). The dp=1 run
replays the same 9 rows. Both runs use fp32 FSDP parameters (verl's default mixed precision is
bf16; the CPU runs it too, but bf16 rounding would hide the comparison in noise).

What is not verl's: the rollout server is ``HFServerClient`` (HF ``generate`` in this process)
instead of vLLM; the weight sync pulls verl's exported weights (``get_per_tensor_param`` on every
rank) through the worker group instead of verl's checkpoint engine; the environment is scripted;
the workers subclass verl's ``ActorRolloutRefWorker`` to hold actor and reference in one process
without a rollout (verl's role ``actor_rollout_ref`` would also build a vLLM rollout), and to
report their parameter shards.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from verl.single_controller.base.decorator import Dispatch, register  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402

LENGTHS = [3, 1, 3, 2]  # steps per trajectory: 9 rows


class ActorRefWorker(ActorRolloutRefWorker):
    """verl's worker with the actor and the reference model in one process, and no rollout."""

    def __init__(self, config, role: str = "actor", **kwargs):
        super().__init__(config, role="actor", **kwargs)
        self.role, self._is_ref = "actor_ref", True  # init_model builds each part its role names

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def local_shards(self) -> dict:
        """This rank's shard (FSDP2 local tensor) of every actor parameter."""
        module = self.actor.engine.module
        return {
            name: (p.to_local() if hasattr(p, "to_local") else p).detach().cpu().clone()
            for name, p in module.named_parameters()
        }

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def full_weights(self) -> dict:
        """verl's weight export (what its checkpoint engine sends to rollout servers), gathered."""
        params, _ = self.actor.engine.get_per_tensor_param()
        return {name: tensor.detach().cpu().clone() for name, tensor in params}


class EarlyEndRunner:
    """``EnvGroupRunner``'s interface, scripted: environment i ends after ``LENGTHS[i]`` steps; the
    copies of a task pass through the same states (anchors), so GiGPO's step groups have members;
    even-numbered copies win at the end."""

    def __init__(self, lengths: list[int]):
        self.lengths, self.num_envs = lengths, len(lengths)
        self.seeds, self.steps = [0] * self.num_envs, [0] * self.num_envs

    def _info(self, i: int) -> dict:
        return {
            "task": "Leave the house.",
            "admissible_actions": ["go east", "go west", "look"],
            "anchor": ("room", self.seeds[i], self.steps[i]),
        }

    def reset(self, seeds):
        self.seeds, self.steps = list(seeds), [0] * self.num_envs
        return [f"Room {s}: doors east and west." for s in self.seeds], [
            self._info(i) for i in range(self.num_envs)
        ]

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = [], [], [], [], []
        for i, action in enumerate(actions):
            self.steps[i] += action is not None
            done = self.steps[i] >= self.lengths[i]
            won = done and i % 2 == 0
            info = {**self._info(i), "won": won, "action_valid": action in ("go east", "go west", "look")}
            obs.append(f"Room {self.seeds[i]}, step {self.steps[i]}.")
            rewards.append(1.0 if won else 0.0)
            terminated.append(done)
            truncated.append(False)
            infos.append(info)
        return obs, rewards, terminated, truncated, infos

    def close(self):
        return None


class GroupWeightSync:
    """``checkpoint_manager`` stand-in: verl's exported actor weights -> the HF server's model."""

    def __init__(self, group, server_model):
        self.group, self.server_model, self.syncs = group, server_model, 0

    def update_weights(self, global_steps=None):
        state = self.group.full_weights()[0]
        _, unexpected = self.server_model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        self.syncs += 1

    def sleep_replicas(self):
        return None


def compose(folder: Path, out: Path, dp: int):
    from lamina.integrations.verl.config import VerlBackendConfig
    from lamina.integrations.verl.launch import validate
    from lamina.trainer.config import RunConfig

    fp32 = "{param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}"
    cfg = RunConfig()
    cfg.env.name, cfg.env.max_steps, cfg.env.train_tasks = "textworld", max(LENGTHS), 4  # env: scripted
    cfg.algorithm.estimator, cfg.algorithm.loss.kl_coef = "gigpo", 0.01
    cfg.agent.mode, cfg.layers = "generate", [1]
    cfg.agent.history, cfg.agent.max_observation_chars = 1, 200
    cfg.rollout.batch_size, cfg.rollout.group_size = 2, 2
    cfg.eval.episodes = 0
    cfg.trainer.iterations, cfg.trainer.lr, cfg.trainer.output_dir = 1, 1e-3, str(out / "run")
    verl_cfg = VerlBackendConfig(
        n_gpus_per_node=dp,
        gradient_checkpointing=True,
        attn_implementation="sdpa",
        micro_batch_size=2,
        mini_batches=2,
        max_prompt_length=192,
        max_response_length=8,
        overrides=[
            "actor_rollout_ref.actor.use_torch_compile=false",
            "actor_rollout_ref.ref.use_torch_compile=false",
            f"+actor_rollout_ref.actor.fsdp_config.mixed_precision={fp32}",
            f"+actor_rollout_ref.ref.fsdp_config.mixed_precision={fp32}",
        ],
    )
    config = validate(cfg, verl_cfg, model_path=str(folder))
    assert config.actor_rollout_ref.model.use_remove_padding
    assert config.actor_rollout_ref.model.enable_gradient_checkpointing
    return config


def hf_log_probs(model, batch):
    """Log-probabilities of the response tokens under an HF model, on left/right-padded rows."""
    import torch

    data = batch.batch
    with torch.no_grad():
        logits = model(
            input_ids=data["input_ids"],
            attention_mask=data["attention_mask"],
            position_ids=data["position_ids"],
        ).logits
    width = data["responses"].shape[1]
    log_probs = torch.log_softmax(logits[:, -width - 1 : -1].float(), dim=-1)
    return log_probs.gather(-1, data["responses"][..., None])[..., 0]


def run(folder: Path, out: Path, dp: int, rows=None) -> dict:
    """One ``fit`` iteration on ``dp`` Ray workers; ``rows`` replays a played batch."""
    import ray
    import torch
    from dp_fit_scenario import ActorRefWorker, EarlyEndRunner, GroupWeightSync
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.trainer.ppo.ray_trainer import Role
    from verl_cpu import ActionFirstClient, first_admissible

    from lamina.integrations.verl.trainer import StepPPOTrainer, StepRolloutManager

    config = compose(folder, out, dp)
    pool = RayResourcePool(process_on_nodes=[dp], use_gpu=True, max_colocate_count=1, name_prefix=f"dp{dp}")
    worker_cls = RayClassWithInitArgs(cls=ray.remote(ActorRefWorker), config=config.actor_rollout_ref)
    group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=worker_cls, device_name="cpu")
    group.init_model()
    before = group.local_shards()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    server_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = StepPPOTrainer(
        config=config,
        tokenizer=tokenizer,
        role_worker_mapping={Role.ActorRolloutRef: ActorRefWorker},
        resource_pool_manager=None,
    )
    trainer.actor_rollout_wg = trainer.ref_policy_wg = group
    manager = StepRolloutManager(
        config,
        ActionFirstClient(server_model, tokenizer, first_admissible),
        tokenizer,
        EarlyEndRunner(LENGTHS),
    )
    played = {}
    if rows is None:
        play = manager.play

        def recording_play(seeds, uid_prefix):
            batch = play(seeds, uid_prefix)
            played["rows"] = copy.deepcopy(batch)
            return batch

        manager.play = recording_play
    else:
        manager.play = lambda seeds, uid_prefix: copy.deepcopy(rows)
    trainer.async_rollout_manager = manager
    checks: dict[str, float] = {}
    old_log_prob = trainer._compute_old_log_prob

    def checked_old_log_prob(batch):
        """verl's old log-probs (packed rows, remove-padding) against HF on the padded rows; the
        server holds the same weights until the update."""
        output, mfu = old_log_prob(batch)
        checks["log_prob_rows"] = len(batch)
        mask = batch.batch["response_mask"].bool()
        error = (output.batch["old_log_probs"] - hf_log_probs(server_model, batch))[mask].abs().max()
        checks["old_log_prob_max_err"] = float(error)
        return output, mfu

    trainer._compute_old_log_prob = checked_old_log_prob
    trainer.checkpoint_manager = sync = GroupWeightSync(group, server_model)
    trainer.fit()
    after = group.local_shards()
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    names = list(before[0])
    return {
        "rows": played.get("rows", rows),
        "records": records,
        "syncs": sync.syncs,
        "names": names,
        "ranks": len(before),
        # per rank: the parameters whose local shard changed, and the shards' sizes
        "changed": [
            [n for n in names if not torch.equal(b[n], a[n])] for b, a in zip(before, after, strict=True)
        ],
        "shard_numel": [[int(b[n].numel()) for n in names] for b in before],
        "checks": checks,
        "full": {n: w.detach().clone() for n, w in server_model.named_parameters()},  # synced last
    }


def main(out_dir: str) -> None:
    from cpu_platform import CPU_ENV, install_cpu_platform

    install_cpu_platform()
    import ray
    from verl_cpu import save_tiny_llama

    from lamina.integrations.verl.config import set_process_env
    from lamina.integrations.verl.launch import runtime_env

    out = Path(out_dir)
    folder = save_tiny_llama(out / "model", layers=3)
    config = compose(folder, out / "dp2", 2)
    set_process_env(config)
    env = runtime_env(config)
    env["env_vars"].update(
        CPU_ENV,
        VERL_USE_EXTERNAL_MODULES="cpu_platform",
        LAMINA_TEST_CPU_WORKER="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="1",  # two ranks share two cores
    )
    ray.init(num_cpus=4, num_gpus=3, runtime_env=env, include_dashboard=False)
    try:
        two = run(folder, out / "dp2", 2)
        one = run(folder, out / "dp1", 1, rows=two["rows"])
    finally:
        ray.shutdown()
    from safetensors.torch import load_file

    start = {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}
    names = two["names"]
    diffs = {n: float((two["full"][n] - one["full"][n]).abs().max()) for n in names}
    moved = {n: float((two["full"][n] - start[n]).abs().max()) for n in names}
    result = {
        "rows": len(two["rows"]),
        "records": {"dp2": two["records"], "dp1": one["records"]},
        "syncs": [two["syncs"], one["syncs"]],
        "names": two["names"],
        "ranks": [two["ranks"], one["ranks"]],
        "changed": two["changed"],
        "changed_dp1": one["changed"],
        "shard_numel": two["shard_numel"],
        "max_abs_diff_dp2_dp1": diffs,
        "max_abs_moved_dp2": moved,
        "full_numel": [int(two["full"][n].numel()) for n in names],
        "checks": {"dp2": two["checks"], "dp1": one["checks"]},
    }
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
