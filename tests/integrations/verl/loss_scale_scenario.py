"""Filler rows and verl's loss aggregation, through verl's real FSDP2 engine on the CPU.

Run by ``test_loss_scale.py`` as ``python loss_scale_scenario.py OUT.json``: one rank (gloo), for
each of verl's loss aggregation modes a fresh ``ActorRolloutRefWorker`` runs ``_update_actor``
twice at learning rate 0 (the weights stay put): on 4 real rows, then on the same rows plus 4
``pad_rows`` fillers. verl reports the policy loss and the gradient norm (before clipping) of each;
fillers must change neither. Before lamina's engine counted real rows for ``global_batch_size``,
the ``seq-mean-*`` modes divided by 8 rows instead of 4 and both numbers halved.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def build_worker(folder: Path, mode: str):
    from lamina.integrations.verl.config import VerlBackendConfig, compose_verl_config, set_process_env
    from lamina.trainer.config import RunConfig

    cfg = RunConfig()
    cfg.layers = [1]
    cfg.rollout.batch_size, cfg.rollout.group_size = 2, 2
    cfg.trainer.lr, cfg.algorithm.loss.kl_coef = 0.0, 0.0
    cfg.algorithm.loss.loss_agg_mode = mode
    verl_cfg = VerlBackendConfig(
        n_gpus_per_node=1,
        gradient_checkpointing=False,
        attn_implementation="sdpa",
        micro_batch_size=2,
        mini_batches=1,
        overrides=["actor_rollout_ref.actor.use_torch_compile=false"],  # remove-padding on
    )
    config = compose_verl_config(cfg, verl_cfg, model_path=str(folder))
    set_process_env(config)
    from verl.workers.engine_workers import ActorRolloutRefWorker

    import lamina.integrations.verl.freezing  # noqa: F401  (what the plugin registers in workers)

    worker = ActorRolloutRefWorker(config.actor_rollout_ref, role="actor")
    worker.init_model()
    return config, worker


def update(config, worker, batch) -> dict[str, float]:
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    trainer = types.SimpleNamespace(
        config=config, actor_rollout_wg=worker, distillation_config=None, ref_in_actor=False
    )
    batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
    old, _ = RayPPOTrainer._compute_old_log_prob(trainer, batch)
    config.actor_rollout_ref.actor.ppo_mini_batch_size = len(batch) // int(config.actor_rollout_ref.rollout.n)
    metrics = RayPPOTrainer._update_actor(trainer, batch.union(old)).meta_info["metrics"]
    return {
        "pg_loss": float(sum(metrics["actor/pg_loss"])),  # per micro-batch parts of the mini-batch loss
        "grad_norm": float(metrics["actor/grad_norm"][0]),
    }


def main(out: str) -> None:
    from cpu_platform import install_cpu_platform

    install_cpu_platform()
    import torch.distributed as dist
    from actor_update_scenario import batch_of_rows
    from omegaconf import open_dict
    from verl_cpu import save_tiny_llama, set_env, single_process_env

    from lamina.integrations.verl.trainer import pad_rows

    set_env(single_process_env())
    dist.init_process_group("gloo", rank=0, world_size=1)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_llama(Path(tmp) / "tiny", layers=2)
        for mode in MODES:
            config, worker = build_worker(folder, mode)
            with open_dict(config):
                real = update(config, worker, batch_of_rows())
                padded, _ = pad_rows(batch_of_rows(), 1, 8)
                with_fillers = update(config, worker, padded)
            result[mode] = {"real": real, "with_fillers": with_fillers, "rows": [4, len(padded)]}
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
