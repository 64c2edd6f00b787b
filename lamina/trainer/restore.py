"""From a run folder or a checkpoint folder back to the trained model.

A run folder holds ``config.yaml`` and ``checkpoints/iter_NNNNNN/`` (``trainable.safetensors`` with
the trained tensors only, ``state.json``); the base model is named by the run's ``model`` config.
A run started with ``init_from=DIR`` (e.g. from ``lamina sft``) saved only the tensors it trained
itself, so the chain of ``init_from`` folders is loaded first, oldest first.

    model, tokenizer, checkpoint = load_trained_model("runs/default")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.models import ModelConfig, load_model
from lamina.trainer.checkpoint import latest_checkpoint, load_checkpoint

MAX_INIT_CHAIN = 16


def resolve_checkpoint(path: str | Path, argument: str = "checkpoint=") -> tuple[Path, Path]:
    """``(checkpoint folder, run folder)`` of a run folder (its newest complete checkpoint) or of a
    checkpoint folder (``<run>/checkpoints/iter_NNNNNN``).

    Args:
        path: the folder.
        argument: how the command line named it, for messages (``checkpoint=`` or a positional name).

    Raises:
        ValueError: naming the path and what a valid one holds.
    """
    path = Path(path)
    named = f"{argument}{str(path)!r}" if argument.endswith("=") else f"{argument} {str(path)!r}"
    if (path / "state.json").exists() and (path / "trainable.safetensors").exists():
        return path, path.parent.parent
    if path.is_dir() and (path / "checkpoints").is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            return ckpt, path
        raise ValueError(f"{named}: {path / 'checkpoints'} holds no complete checkpoint")
    raise ValueError(
        f"{named} is neither a run folder (with checkpoints/) nor a checkpoint folder "
        "(with trainable.safetensors and state.json)"
    )


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as plain containers."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ValueError(f"{run_dir} has no config.yaml: cannot tell which base model was trained")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def model_config_of(config: dict[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` of a run config (keys this version does not know are ignored)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in (config.get("model") or {}).items() if k in known})


def same_base_model(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two model configs name the same base weights (the dtype may differ)."""
    if a.path or b.path:
        return a.path == b.path
    if a.name == "tiny-random" or b.name == "tiny-random":
        return (a.name, a.tiny_layers, a.tiny_hidden) == (b.name, b.tiny_layers, b.tiny_hidden)
    return a.name == b.name


def init_chain(run_dir: Path) -> list[Path]:
    """Checkpoint folders to load before the run's own, oldest first (its ``init_from`` chain)."""
    chain: list[Path] = []
    config = run_config(run_dir)
    model = model_config_of(config)
    source = config.get("init_from")
    while source:
        ckpt, parent = resolve_checkpoint(source)
        if ckpt in chain or len(chain) >= MAX_INIT_CHAIN:
            raise ValueError(f"init_from chain of {run_dir} loops or is longer than {MAX_INIT_CHAIN}")
        parent_config = run_config(parent)
        if not same_base_model(model_config_of(parent_config), model):
            raise ValueError(
                f"init_from={str(source)!r} trained model {model_config_of(parent_config)}, "
                f"but {run_dir} trains {model}"
            )
        chain.insert(0, ckpt)
        source = parent_config.get("init_from")
    return chain


def load_trained_model(
    path: str | Path,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Path]:
    """Loads the run's base model, then its ``init_from`` chain and its checkpoint's tensors.

    Args:
        path: a run folder or a checkpoint folder.
    Returns:
        ``(model, tokenizer, checkpoint folder)``; the model is in eval mode.
    """
    ckpt, run_dir = resolve_checkpoint(path)
    config = run_config(run_dir)
    model, tokenizer = load_model(model_config_of(config))
    for earlier in [*init_chain(run_dir), ckpt]:
        load_checkpoint(earlier, model)
    model.eval()
    return model, tokenizer, ckpt


def load_init_from(source: str | Path, model: PreTrainedModel, model_cfg: ModelConfig) -> Path:
    """``init_from=DIR``: loads a finished run's trained tensors (and its own ``init_from`` chain)
    into ``model``, e.g. a ``lamina sft`` warm start before RL. The layers it trained may differ
    from the ones the new run trains. Returns the checkpoint folder loaded.

    Raises:
        ValueError: the folder is not a run/checkpoint, or it trained another base model.
    """
    ckpt, run_dir = resolve_checkpoint(source)
    trained = model_config_of(run_config(run_dir))
    if not same_base_model(trained, model_cfg):
        raise ValueError(
            f"init_from={str(source)!r} trained model {trained.path or trained.name!r}, "
            f"but this run trains {model_cfg.path or model_cfg.name!r}"
        )
    for earlier in [*init_chain(run_dir), ckpt]:
        load_checkpoint(earlier, model)
    return ckpt
