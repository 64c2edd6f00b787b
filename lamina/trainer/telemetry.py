"""Per-block telemetry of a run: what each trainable block's update did, every iteration.

For each block holding trainable tensors (``embeddings`` / ``lm_head`` when those train), with
g the gradient, theta the block's tensors taken together (all of them as one vector):

- ``grad_norm``: ||g||_2 before the gradient-norm clip, averaged over the iteration's optimizer
  steps (``grad_norm`` of the record is the same over all blocks together);
- ``update_ratio``: ||theta_after - theta_before|| / ||theta_before||, the iteration's whole update
  (all its optimizer steps) relative to the weights it started from;
- ``relative_change``: ||theta_t - theta_0|| / ||theta_0||, the drift from the run's start (the base
  model plus ``init_from``).

Cost: theta_0 and a per-iteration snapshot of the trainable tensors only (a one-block run of a
30-block model copies 1/30 of it twice; theta_0 is shared with the KL reference when there is one),
and a few reductions per tensor per iteration. ``logging.telemetry=false`` turns it off.

Each training record also gets the arm's cost, so sweeps can compare arms at matched compute:
``trainable_parameters``; ``update_flops_per_token`` = 4 P_traversed + 2 P_trainable, where
P_traversed counts the parameters of every block from the lowest one holding a trainable tensor to
the top, plus the LM head (with ``trainer.update.frozen_prefix``, the update's forward starts
there; 2 FLOPs per parameter per token forward, 2 for the backward to the activations through the
same blocks, 2 per trainable parameter for its weight gradient; attention's sequence-length terms
are left out); and ``peak_memory_mb`` (CUDA: the peak of ``torch.cuda.max_memory_allocated``
since the run started; CPU: the resident high-water mark ``VmHWM`` since the run started, reset
through ``/proc/self/clear_refs`` where Linux allows, else since the process started).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lamina.trainer.layers import block_of, find_blocks

METRICS = ("grad_norm", "update_ratio", "relative_change")


def block_key(name: str, block_prefix: str | None) -> str:
    """The telemetry key of a parameter: its block index as text, ``embeddings``, ``lm_head``, or
    the name itself outside the block list."""
    block = block_of(name, block_prefix) if block_prefix is not None else None
    if block is not None:
        return str(block)
    return "embeddings" if "embed" in name else "lm_head" if "head" in name else name


def _norms_sq(tensors: Sequence[torch.Tensor]) -> list[float]:
    """Squared fp32 2-norms of the tensors, read back to the host in one transfer."""
    if not tensors:
        return []
    norms = [torch.linalg.vector_norm(t.detach(), dtype=torch.float32) for t in tensors]
    return [v * v for v in torch.stack(norms).cpu().tolist()]


def _diff_norms_sq(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> list[float]:
    """Squared fp32 2-norms of a_i - b_i (one temporary per tensor, read back once)."""
    if not a:
        return []
    norms = [torch.linalg.vector_norm(x.detach().float() - y.float()) for x, y in zip(a, b, strict=True)]
    return [v * v for v in torch.stack(norms).cpu().tolist()]


def reset_peak_memory(device: torch.device) -> None:
    """Starts the peak-memory measurement of ``peak_memory_mb`` afresh (best effort)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def peak_memory_mb(device: torch.device) -> float | None:
    """The peak memory since ``reset_peak_memory``, in MiB; None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    return None


class BlockTelemetry:
    """Collects the per-block numbers of one run.

        telemetry = BlockTelemetry(model, trainable)   # before any update (and before a resume)
        telemetry.begin_iteration()
        ...  # the update calls telemetry.record_gradients() before each clip + optimizer step
        row.update(telemetry.end_iteration())

    Args:
        model: the model, to name the trainable tensors' blocks and count parameters.
        trainable: the tensors the optimizer updates.
        initial: theta_0, the same tensors' starting values (e.g. the KL reference's copies);
            None: copied here.
        frozen_prefix: the update's forward starts at the lowest trainable block (else at the
            embeddings), for ``update_flops_per_token``.
    """

    def __init__(
        self,
        model: nn.Module,
        trainable: Sequence[nn.Parameter],
        initial: Sequence[torch.Tensor] | None = None,
        frozen_prefix: bool = True,
    ):
        self.params = list(trainable)
        try:
            prefix, block_list = find_blocks(model)
        except ValueError:
            prefix, block_list = None, nn.ModuleList()
        names = {id(p): n for n, p in model.named_parameters()}
        self.keys = [block_key(names.get(id(p), f"tensor{i}"), prefix) for i, p in enumerate(self.params)]
        self.initial = list(initial) if initial is not None else [p.detach().clone() for p in self.params]
        self._initial_sq = self._by_block(_norms_sq(self.initial))
        self._before: list[torch.Tensor] | None = None
        self._grad_sq: dict[str, list[float]] = {}
        self.trainable_parameters = sum(p.numel() for p in self.params)
        self.update_flops_per_token = self._flops(model, prefix, block_list, frozen_prefix)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        reset_peak_memory(self.device)

    def _by_block(self, values: Sequence[float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in zip(self.keys, values, strict=True):
            out[key] = out.get(key, 0.0) + value
        return out

    def _flops(
        self, model: nn.Module, prefix: str | None, block_list: nn.ModuleList, frozen_prefix: bool
    ) -> int:
        blocks = [int(k) for k in self.keys if k.isdigit()]
        below_blocks = any(not k.isdigit() and k != "lm_head" for k in self.keys)  # embeddings train
        lowest = 0 if below_blocks or not frozen_prefix or not blocks else min(blocks)
        traversed = sum(p.numel() for b in range(lowest, len(block_list)) for p in block_list[b].parameters())
        head = getattr(model, "get_output_embeddings", lambda: None)()
        if head is not None:
            traversed += sum(p.numel() for p in head.parameters())
        return 4 * traversed + 2 * self.trainable_parameters

    def begin_iteration(self) -> None:
        """Snapshots theta_before (into buffers kept across iterations)."""
        with torch.no_grad():
            if self._before is None:
                self._before = [p.detach().clone() for p in self.params]
            else:
                for buf, p in zip(self._before, self.params, strict=True):
                    buf.copy_(p.detach())
        self._grad_sq = {}

    def record_gradients(self) -> None:
        """Adds this optimizer step's per-block squared gradient norms (call before clipping)."""
        grads = [p.grad if p.grad is not None else torch.zeros((), device=p.device) for p in self.params]
        sq = self._by_block(_norms_sq(grads))
        for key, value in sq.items():
            self._grad_sq.setdefault(key, []).append(value)

    def end_iteration(self) -> dict:
        """The iteration's record fields: ``telemetry`` ({metric: {block: value}}, blocks as text),
        ``trainable_parameters``, ``update_flops_per_token`` and ``peak_memory_mb``."""
        with torch.no_grad():
            drift = self._by_block(_diff_norms_sq(self.params, self.initial))
            if self._before is not None:
                before_sq = self._by_block(_norms_sq(self._before))
                step = self._by_block(_diff_norms_sq(self.params, self._before))
            else:
                before_sq, step = {}, {}
        telemetry: dict[str, dict[str, float]] = {m: {} for m in METRICS}
        for key in dict.fromkeys(self.keys):
            if key in self._grad_sq:
                telemetry["grad_norm"][key] = sum(math.sqrt(v) for v in self._grad_sq[key]) / len(
                    self._grad_sq[key]
                )
            if before_sq.get(key, 0.0) > 0:
                telemetry["update_ratio"][key] = math.sqrt(step[key]) / math.sqrt(before_sq[key])
            if self._initial_sq.get(key, 0.0) > 0:
                telemetry["relative_change"][key] = math.sqrt(drift[key]) / math.sqrt(self._initial_sq[key])
        row: dict = {
            "telemetry": telemetry,
            "trainable_parameters": self.trainable_parameters,
            "update_flops_per_token": self.update_flops_per_token,
        }
        peak = peak_memory_mb(self.device)
        if peak is not None:
            row["peak_memory_mb"] = peak
        return row
