"""The ``model`` config group's dataclass, apart from the loading code so that composing and
checking a config imports neither torch nor transformers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """``model`` config group.

    Args:
        name: ``smollm2-135m``, ``tiny-random``, or ``custom`` (then ``path`` is required).
        path: any HF model id or local folder; overrides ``name`` when set.
        dtype: ``auto`` (float32 on CPU, where bf16 matmuls run at half the fp32 rate here;
            bfloat16 on GPUs that support it), ``float32``, ``bfloat16`` or ``float16``. In a lower
            precision the trainable blocks keep fp32 master weights (``lamina.trainer.precision``).
        tiny_layers: number of blocks of the ``tiny-random`` model.
        tiny_hidden: hidden size of the ``tiny-random`` model.
        trust_remote_code: run a model folder's own Python code (off unless set).
    """

    name: str = "smollm2-135m"
    path: str | None = None
    dtype: str = "auto"
    tiny_layers: int = 4
    tiny_hidden: int = 64
    trust_remote_code: bool = False
