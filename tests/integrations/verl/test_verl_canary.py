"""Canary: the verl 0.9 internals lamina's plugin, trainer extension and the CPU test platform rely
on. An upgrade of verl that moves any of them fails here first, with the name of what moved."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import verl

from lamina.integrations.verl import freezing


def test_verl_version_is_the_one_lamina_targets():
    assert verl.__version__.startswith("0.9."), verl.__version__


@pytest.mark.slow
@pytest.mark.parametrize(("policy", "loaded"), [("auto", True), ("none", False)])
def test_verl_loads_the_plugin_entry_point_in_every_process(policy, loaded):
    """``import verl`` imports entry points of ``verl.plugins``, as VERL_USE_EXTERNAL_PLUGINS says."""
    code = (
        "import sys, verl; from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as r; "
        "print('lamina.integrations.verl.plugin' in sys.modules, 'gigpo' in r)"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": policy, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split()[-2:] == [str(loaded), str(loaded)], out.stderr[-2000:]


def test_platform_interface_is_what_the_cpu_platform_implements():
    from cpu_platform import CPUTestPlatform
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    missing = sorted(PlatformBase.__abstractmethods__ - set(vars(CPUTestPlatform)))
    assert not missing, f"verl's PlatformBase gained abstract methods: {missing}"
    assert PlatformRegistry.get("lamina_test_cpu") is CPUTestPlatform
    from verl.plugin.platform import platform_manager

    assert "VERL_PLATFORM" in inspect.getsource(platform_manager._detect_platform_name)


def test_internals_the_cpu_platform_works_around():
    from verl.utils import distributed, flops_counter, import_utils
    from verl.workers.engine.fsdp import transformer_impl

    # verl joins "cpu:gloo" with the platform's backend: gloo twice is refused, so tests pre-init gloo
    # or (in Ray workers) give engine_workers' imported name a backend
    assert "cpu:gloo," in inspect.getsource(distributed.initialize_global_process_group_ray)
    assert "backend" in inspect.signature(distributed.initialize_global_process_group_ray).parameters
    from verl.workers import engine_workers

    assert "initialize_global_process_group_ray(" in inspect.getsource(engine_workers.TrainingWorker.__init__)
    # the FSDP2 reference model pins its offloaded parameters (no accelerator, no pinning)
    assert hasattr(transformer_impl, "CPUOffloadPolicy")
    assert "CPUOffloadPolicy(pin_memory=True)" in inspect.getsource(
        transformer_impl.FSDPEngine._build_fsdp_module
    )
    # Ray workers import the CPU platform through VERL_USE_EXTERNAL_MODULES
    assert "VERL_USE_EXTERNAL_MODULES" in inspect.getsource(verl)
    assert callable(import_utils.import_external_libs)
    # MFU asks the device module for its name
    assert "get_device_name()" in inspect.getsource(flops_counter.get_device_flops)


def test_engine_registry_and_the_hooks_lamina_overrides(monkeypatch):
    from verl.workers.engine import EngineRegistry, FSDPEngineWithLMHead
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    monkeypatch.setenv("VERL_ENGINE_DEVICE", "cuda")
    monkeypatch.setenv("VERL_ENGINE_VENDOR", freezing.ENGINE_VENDOR)
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is freezing.LayerSelectingFSDPEngine
    monkeypatch.delenv("VERL_ENGINE_VENDOR")
    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is not freezing.LayerSelectingFSDPEngine
    assert issubclass(freezing.LayerSelectingFSDPEngine, FSDPEngineWithLMHead)
    # freeze after _build_module, before FSDP wrapping; the optimizer is built after wrapping
    build = inspect.getsource(FSDPEngine._build_model_optimizer)
    assert (
        build.index("self._build_module()")
        < build.index("self._build_fsdp_module(")
        < build.index("self._build_optimizer(module)")
    )
    assert "module.parameters()" in inspect.getsource(FSDPEngine._build_optimizer)


def test_trainer_methods_the_per_step_trainer_reuses():
    from verl.trainer.main_ppo_v0 import BaseTaskRunner
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    for name in (
        "init_workers",
        "_compute_old_log_prob",
        "_compute_ref_log_prob",
        "_update_actor",
        "_load_checkpoint",
        "_save_checkpoint",
    ):
        assert callable(getattr(RayPPOTrainer, name, None)), name
    params = list(inspect.signature(RayPPOTrainer._create_dataloader).parameters)
    assert params == ["self", "train_dataset", "val_dataset", "collate_fn", "train_sampler"]
    assert "agent_loop_manager_class" in inspect.getsource(RayPPOTrainer.init_workers)
    assert "ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n" in inspect.getsource(
        RayPPOTrainer._update_actor
    )
    for name in ("add_actor_rollout_worker", "add_reward_model_resource_pool", "init_resource_pool_mgr"):
        assert callable(getattr(BaseTaskRunner, name, None)), name


def test_rollout_server_interface():
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.replica import TokenOutput

    params = inspect.signature(LLMServerClient.generate).parameters
    assert {"request_id", "prompt_ids", "sampling_params"} <= set(params)
    assert {"token_ids", "log_probs"} <= set(TokenOutput.model_fields)


def test_agent_loop_interface_the_episode_loop_uses():
    from verl.experimental.agent_loop import agent_loop

    for name in ("ct_build_initial_tokens", "ct_merge_assistant_token", "ct_merge_context_msg"):
        assert callable(getattr(agent_loop.AgentLoopBase, name, None)), name
    fields = set(agent_loop.AgentLoopOutput.model_fields)
    assert {"prompt_ids", "response_ids", "response_mask", "response_logprobs", "reward_score"} <= fields
    assert "agent_loop_config_path" in inspect.getsource(agent_loop.AgentLoopWorker)
