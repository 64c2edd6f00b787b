"""lamina's layer selection reaching verl's workers through Ray, on the CPU, in its own process.

Run by ``test_ray_workers.py`` as ``python ray_scenario.py OUT_DIR``. A local Ray with one faked
GPU; verl's ``RayWorkerGroup`` of ``ActorRolloutRefWorker`` (role actor); the worker process gets
only what lamina's launcher gives every worker (``launch.runtime_env``: ``LAMINA_VERL_LAYERS``,
``VERL_ENGINE_VENDOR``) plus the test CPU platform, and must find lamina's plugin by itself
(the ``verl.plugins`` entry point). One ``update_actor`` through Ray; the worker saves HF weights
before and after, which the test compares.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main(out_dir: str) -> None:
    from cpu_platform import CPU_ENV, install_cpu_platform

    install_cpu_platform()
    import ray
    from actor_update_scenario import batch_of_rows
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl_cpu import save_tiny_llama

    from lamina.integrations.verl.config import VerlBackendConfig, compose_verl_config
    from lamina.integrations.verl.launch import runtime_env
    from lamina.trainer.config import RunConfig

    out = Path(out_dir)
    folder = save_tiny_llama(out / "model", layers=3)
    cfg = RunConfig()
    cfg.layers, cfg.trainer.lr, cfg.algorithm.loss.kl_coef = [2], 1e-3, 0.0
    cfg.rollout.batch_size, cfg.rollout.group_size = 2, 2
    verl_cfg = VerlBackendConfig(
        n_gpus_per_node=1,
        gradient_checkpointing=False,
        attn_implementation="sdpa",
        micro_batch_size=2,
        mini_batches=1,
        overrides=[
            "actor_rollout_ref.model.use_remove_padding=false",
            "actor_rollout_ref.actor.use_torch_compile=false",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
        ],
    )
    config = compose_verl_config(cfg, verl_cfg, model_path=str(folder))
    env = runtime_env(config)
    env["env_vars"].update(
        CPU_ENV,
        VERL_USE_EXTERNAL_MODULES="cpu_platform",
        LAMINA_TEST_CPU_WORKER="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        PYTHONWARNINGS="ignore",
    )
    ray.init(num_cpus=2, num_gpus=1, runtime_env=env, include_dashboard=False)
    try:
        pool = RayResourcePool(process_on_nodes=[1], use_gpu=True, max_colocate_count=1)
        worker_cls = RayClassWithInitArgs(
            cls=ray.remote(ActorRolloutRefWorker), config=config.actor_rollout_ref, role="actor"
        )
        group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=worker_cls, device_name="cpu")
        group.init_model()
        group.save_checkpoint(str(out / "before"))
        trainer = types.SimpleNamespace(
            config=config, actor_rollout_wg=group, distillation_config=None, ref_in_actor=False
        )
        batch = batch_of_rows()
        old, _ = RayPPOTrainer._compute_old_log_prob(trainer, batch)
        metrics = RayPPOTrainer._update_actor(trainer, batch.union(old)).meta_info["metrics"]
        group.save_checkpoint(str(out / "after"))
    finally:
        ray.shutdown()
    from safetensors.torch import load_file

    def weights(tag):
        return {
            k: v
            for f in sorted((out / tag / "huggingface").glob("*.safetensors"))
            for k, v in load_file(f).items()
        }

    before, after = weights("before"), weights("after")
    import torch

    result = {
        "names": list(before),
        "changed": [n for n in before if not torch.equal(before[n], after[n])],
        "grad_norm": float(metrics["actor/grad_norm"][0]),
    }
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
