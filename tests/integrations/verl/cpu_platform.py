"""A CPU platform for verl, for tests only: device ``cpu``, collectives over gloo, no pinned memory.

verl 0.9 resolves its device through ``verl.plugin.platform`` (``PlatformRegistry``); with no
accelerator it falls back to CUDA and NCCL. This platform, registered through that same
mechanism, lets verl's real FSDP2 engine and workers run on a CPU-only machine. It lives in
``tests/`` on purpose: lamina's product path never runs verl on CPU.

    from cpu_platform import install_cpu_platform
    install_cpu_platform()        # before verl builds any worker, in every process that does
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry, set_platform

PLATFORM_NAME = "lamina_test_cpu"


def _cpu_device_module() -> types.SimpleNamespace:
    """``torch.cpu`` plus the CUDA-style memory queries verl's workers call (all report 0)."""
    zero = lambda *args, **kwargs: 0  # noqa: E731
    nothing = lambda *args, **kwargs: None  # noqa: E731
    return types.SimpleNamespace(
        is_available=lambda: True,
        current_device=lambda: "cpu",
        device_count=lambda: 1,
        set_device=nothing,
        synchronize=nothing,
        empty_cache=nothing,
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        max_memory_allocated=zero,
        max_memory_reserved=zero,
        memory_allocated=zero,
        memory_reserved=zero,
        reset_peak_memory_stats=nothing,
        set_per_process_memory_fraction=nothing,
        mem_get_info=lambda *args, **kwargs: (8 << 30, 16 << 30),
        get_rng_state=torch.get_rng_state,
        set_rng_state=torch.set_rng_state,
        is_initialized=lambda: True,
        get_device_name=lambda *args, **kwargs: "CPU",
    )


@PlatformRegistry.register(platform=PLATFORM_NAME)
class CPUTestPlatform(PlatformBase):
    """verl's platform interface on the CPU: gloo collectives, no IPC, no profiler."""

    _module = _cpu_device_module()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> Any:
        return self._module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-detected: only chosen explicitly

    def current_device(self) -> Any:
        # verl moves modules with ``.to(device=current_device())``; an int means an accelerator
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # ray.init(num_gpus=N) fakes the accelerators the resource pools ask for

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


# What a process needs so that verl picks this platform and its FSDP engine on the CPU (the
# reference model's offload policy is unpinned by ``install_cpu_platform``):
# VERL_PLATFORM selects the platform; VERL_ENGINE_DEVICE=cuda finds the FSDP engine (registered
# for cuda/npu only); flash-attention is absent, so models use sdpa.
CPU_ENV = {"VERL_PLATFORM": PLATFORM_NAME, "VERL_ENGINE_DEVICE": "cuda"}


def _unpinned_offload_policy():
    """verl's FSDP2 reference model offloads with ``CPUOffloadPolicy(pin_memory=True)``, hard-coded
    in ``transformer_impl``; pinning needs an accelerator. The same policy, never pinned."""
    from torch.distributed.fsdp import CPUOffloadPolicy
    from verl.workers.engine.fsdp import transformer_impl

    class UnpinnedCPUOffloadPolicy(CPUOffloadPolicy):
        def __init__(self, pin_memory: bool = False):
            super().__init__(pin_memory=False)

    transformer_impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def _gloo_process_group():
    """verl's workers join ``cpu:gloo,<device>:<backend>``, i.e. ``cpu:gloo,cpu:gloo`` here, which
    torch refuses; they join plain gloo instead."""
    import functools

    from verl.utils import distributed
    from verl.workers import engine_workers

    engine_workers.initialize_global_process_group_ray = functools.partial(
        distributed.initialize_global_process_group_ray, backend="gloo"
    )


def install_cpu_platform() -> None:
    """Makes this process's verl run on the CPU platform (idempotent)."""
    os.environ.update(CPU_ENV)
    set_platform(CPUTestPlatform())
    _unpinned_offload_policy()
    _gloo_process_group()


# In a Ray worker: ``VERL_USE_EXTERNAL_MODULES=cpu_platform`` imports this module while verl is
# imported, and ``VERL_PLATFORM`` names this platform; install it there and then.
if os.environ.get("VERL_PLATFORM") == PLATFORM_NAME and os.environ.get("LAMINA_TEST_CPU_WORKER") == "1":
    install_cpu_platform()
