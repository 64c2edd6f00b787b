"""One iteration of lamina's per-step verl trainer on the CPU, in its own process.

Run by ``test_fit_cpu.py`` as ``python fit_scenario.py OUT_DIR``. Real verl parts: the composed
config and verl's validation, ``ActorRolloutRefWorker`` actor and reference (FSDP2, gloo, lamina's
layer-selecting engine), ``StepPPOTrainer`` (verl's ``RayPPOTrainer`` with lamina's ``fit``),
verl's log-prob/update paths, GiGPO through verl's registry, verl's weight export
(``get_per_tensor_param``). Not verl's: the workers run in this process instead of Ray actors, the
rollout server is ``HFServerClient`` (HF ``generate`` on the CPU) instead of vLLM, and the weight
sync loads verl's exported tensors into that HF model instead of a vLLM replica.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


class InProcessWeightSync:
    """``checkpoint_manager`` stand-in: verl's exported actor weights -> the HF server's model."""

    def __init__(self, engine, server_model):
        self.engine, self.server_model, self.syncs = engine, server_model, 0

    def update_weights(self, global_steps=None):
        params, _ = self.engine.get_per_tensor_param()
        state = {name: tensor.detach().to("cpu").clone() for name, tensor in params}
        missing, unexpected = self.server_model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        self.syncs += 1

    def sleep_replicas(self):
        return None


def main(out_dir: str) -> None:
    from cpu_platform import install_cpu_platform

    install_cpu_platform()
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl_cpu import ActionFirstClient, first_admissible, save_tiny_llama, set_env, single_process_env

    from lamina.integrations.verl.config import VerlBackendConfig, set_process_env
    from lamina.integrations.verl.launch import validate
    from lamina.trainer.config import RunConfig

    out = Path(out_dir)
    folder = save_tiny_llama(out / "model", layers=3)
    set_env(single_process_env())
    dist.init_process_group("gloo", rank=0, world_size=1)
    cfg = RunConfig()
    cfg.env.name, cfg.env.max_steps = "textworld", 2
    cfg.env.kwargs = {"challenge": "tw-treasure_hunter", "settings": {"level": 1}}
    cfg.env.train_tasks = 4
    cfg.algorithm.estimator, cfg.algorithm.loss.kl_coef = "gigpo", 0.01
    cfg.agent.mode, cfg.layers = "generate", [1]
    cfg.agent.history, cfg.agent.max_observation_chars = 1, 200
    cfg.rollout.batch_size, cfg.rollout.group_size = 2, 2
    cfg.eval.episodes, cfg.eval.temperature = 2, 0.0
    cfg.trainer.iterations, cfg.trainer.lr, cfg.trainer.output_dir = 1, 1e-3, str(out / "run")
    verl_cfg = VerlBackendConfig(
        n_gpus_per_node=1,
        gradient_checkpointing=False,
        attn_implementation="sdpa",
        micro_batch_size=4,
        mini_batches=1,
        max_prompt_length=192,
        max_response_length=8,
        overrides=[
            "actor_rollout_ref.model.use_remove_padding=false",
            "actor_rollout_ref.actor.use_torch_compile=false",
            "actor_rollout_ref.ref.use_torch_compile=false",
        ],
    )
    config = validate(cfg, verl_cfg, model_path=str(folder))
    set_process_env(config)
    from verl.trainer.ppo.ray_trainer import Role
    from verl.workers.engine_workers import ActorRolloutRefWorker

    import lamina.integrations.verl.freezing  # noqa: F401  (what the plugin registers in workers)
    from lamina.integrations.verl.trainer import StepPPOTrainer, StepRolloutManager

    actor = ActorRolloutRefWorker(config.actor_rollout_ref, role="actor")
    actor.init_model()
    ref = ActorRolloutRefWorker(config.actor_rollout_ref, role="ref")
    ref.init_model()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    server_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = StepPPOTrainer(
        config=config,
        tokenizer=tokenizer,
        role_worker_mapping={Role.ActorRolloutRef: ActorRolloutRefWorker},
        resource_pool_manager=None,
    )
    trainer.actor_rollout_wg, trainer.ref_policy_wg = actor, ref
    trainer.async_rollout_manager = StepRolloutManager(
        config, ActionFirstClient(server_model, tokenizer, first_admissible), tokenizer
    )
    trainer.checkpoint_manager = sync = InProcessWeightSync(actor.actor.engine, server_model)
    before = {n: p.detach().clone() for n, p in server_model.named_parameters()}
    trainer.fit()
    after = {n: p.detach().clone() for n, p in server_model.named_parameters()}
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    result = {
        "records": records,
        "syncs": sync.syncs,
        "server_changed": [n for n in before if not torch.equal(before[n], after[n])],
        "names": list(before),
        "use_reference_policy": trainer.use_reference_policy,
        "eval": json.loads((out / "run" / "eval.json").read_text()),
    }
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
