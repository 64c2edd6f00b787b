"""One layer-frozen ``update_actor`` through verl's real FSDP2 engine on the CPU, in its own process.

Run by ``test_freezing_fsdp.py`` as ``python actor_update_scenario.py OUT.json LAYERS MODULES``:
the process joins a one-rank gloo group, installs the test CPU platform, builds verl's
``ActorRolloutRefWorker`` (role ``actor``) from the config lamina composes, runs verl's own
``RayPPOTrainer._compute_old_log_prob`` and ``_update_actor`` on a 4-row batch, and writes what the
test checks: trainable names, optimizer tensors, which parameters changed, the metrics.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def full(param):
    return (param.full_tensor() if hasattr(param, "full_tensor") else param).detach().clone()


def build_worker(folder: Path, layers, modules: str):
    import torch.distributed as dist
    from verl_cpu import set_env, single_process_env

    from lamina.integrations.verl.config import VerlBackendConfig, compose_verl_config, set_process_env
    from lamina.trainer.config import RunConfig

    set_env(single_process_env())
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = RunConfig()
    cfg.layers, cfg.modules = layers, modules
    cfg.rollout.batch_size, cfg.rollout.group_size = 2, 2
    cfg.trainer.lr = 1e-3
    cfg.algorithm.loss.kl_coef = 0.0
    verl_cfg = VerlBackendConfig(
        n_gpus_per_node=1,
        gradient_checkpointing=False,
        attn_implementation="sdpa",
        micro_batch_size=2,
        mini_batches=1,
        overrides=[
            "actor_rollout_ref.model.use_remove_padding=false",
            "actor_rollout_ref.actor.use_torch_compile=false",
        ],
    )
    config = compose_verl_config(cfg, verl_cfg, model_path=str(folder))
    set_process_env(config)
    from verl.workers.engine_workers import ActorRolloutRefWorker

    import lamina.integrations.verl.freezing  # noqa: F401  (what the plugin registers in workers)

    worker = ActorRolloutRefWorker(config.actor_rollout_ref, role="actor")
    worker.init_model()
    return config, worker


def batch_of_rows():
    import numpy as np
    import torch

    from lamina.integrations.verl.rollout import StepRows, to_dataproto

    g = torch.Generator().manual_seed(0)
    n = 4
    rows = StepRows(
        prompt_ids=[torch.randint(5, 1000, (k,), generator=g).tolist() for k in (5, 7, 3, 6)],
        response_ids=[torch.randint(5, 1000, (k,), generator=g).tolist() for k in (4, 2, 5, 3)],
        response_log_probs=[None] * n,
        rewards=np.array([1.0, 0.0, 0.5, -0.1]),
        group_uids=["g0", "g0", "g1", "g1"],
        traj_uids=["t0", "t1", "t2", "t3"],
        step_ids=np.zeros(n, dtype=np.int64),
        anchors=["a", "a", "b", "c"],
        action_valid=np.ones(n, dtype=bool),
        episode_returns=np.zeros(n),
        episode_won=np.zeros(n, dtype=bool),
        episode_lengths=np.ones(n),
    )
    batch = to_dataproto(rows, 0, max_prompt_length=64, max_response_length=16)
    batch.meta_info["temperature"] = 1.0
    batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
    batch.batch["advantages"] = torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None] * batch.batch["response_mask"]
    return batch


def main(out: str, layers: str, modules: str) -> None:
    from cpu_platform import install_cpu_platform

    install_cpu_platform()
    from verl_cpu import save_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_llama(Path(tmp) / "tiny", layers=3)
        config, worker = build_worker(folder, json.loads(layers), modules)
        from verl.trainer.ppo.ray_trainer import RayPPOTrainer

        engine = worker.actor.engine
        trainer = types.SimpleNamespace(
            config=config, actor_rollout_wg=worker, distillation_config=None, ref_in_actor=False
        )
        before = {n: full(p) for n, p in engine.module.named_parameters()}
        batch = batch_of_rows()
        old, _ = RayPPOTrainer._compute_old_log_prob(trainer, batch)
        batch = batch.union(old)
        metrics = RayPPOTrainer._update_actor(trainer, batch).meta_info["metrics"]
        after = {n: full(p) for n, p in engine.module.named_parameters()}
        optimizer_ids = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
        result = {
            "engine": type(engine).__name__,
            "trainable": [n for n, p in engine.module.named_parameters() if p.requires_grad],
            "optimizer_params": [n for n, p in engine.module.named_parameters() if id(p) in optimizer_ids],
            "optimizer_tensors": len(optimizer_ids),
            "changed": [n for n in before if not __import__("torch").equal(before[n], after[n])],
            "names": list(before),
            "grad_norm": float(metrics["actor/grad_norm"][0]),
            "trainable_metric": metrics.get("actor/lamina_trainable_tensors"),
            "old_log_probs_shape": list(old.batch["old_log_probs"].shape),
        }
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
