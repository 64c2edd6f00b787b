"""``lamina eval``: held-out evaluation of a run, a checkpoint, the base model or a sweep's ensemble.

    lamina eval checkpoint=runs/default                       # the run's env, agent and model
    lamina eval checkpoint=runs/default/checkpoints/iter_000004 eval.episodes=128 eval.temperature=0
    lamina eval model=smollm2-135m env=alfworld eval.episodes=100
    lamina eval ensemble=runs/sweep:3                         # the 3 best single-block policies' vote

With ``checkpoint=`` (or ``ensemble=``) the model, and the ``env``, ``agent`` and ``rollout``
sections come from that run unless a key of the section is given on the command line. Writes
``eval.json`` and ``config.yaml`` to ``out=`` and prints a table with the 95% interval and the
breakdown by task type.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from omegaconf import OmegaConf

from lamina.errors import ConfigError, UsageError
from lamina.trainer.config import RunConfig

if TYPE_CHECKING:
    import torch

    from lamina.trainer.rollout import Policy

INHERITED = ("env", "agent", "rollout")


def run_config_of(run_dir: Path) -> RunConfig:
    """A run folder's ``config.yaml`` as a typed ``RunConfig`` (keys this version lacks dropped)."""
    from lamina.trainer.restore import run_config

    raw = run_config(run_dir)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), {k: v for k, v in raw.items() if k in known})
    return cast(RunConfig, OmegaConf.to_object(merged))  # a structured config's object: a RunConfig


def inherit(cfg: RunConfig, source: RunConfig, overridden: set[str]) -> RunConfig:
    """``cfg`` with the model and every section in ``INHERITED`` not named on the command line
    taken from ``source``."""
    sections: dict[str, Any] = {"model": source.model, "init_from": source.init_from}
    sections.update({name: getattr(source, name) for name in INHERITED if name not in overridden})
    return dataclasses.replace(cfg, **sections)


def run_evaluation(
    cfg: RunConfig,
    checkpoint: str | None,
    ensemble: str | None,
    out: str | None,
    overridden: set[str] | None = None,
) -> Path:
    """Evaluates and writes ``eval.json``; returns the output folder.

    Args:
        cfg: the composed config (defaults plus command-line overrides).
        checkpoint: a run or checkpoint folder, or None for the base model of ``cfg.model``.
        ensemble: ``SWEEP_DIR:K``, or None.
        out: the output folder (default: ``<run>/evals/<env>``, ``<sweep>/ensemble-top<K>/<env>``
            or ``runs/eval/<model>-<env>``).
        overridden: top-level config sections named on the command line.
    """
    # Imported here, not at the top: ``lamina eval`` refuses a bad command line before torch loads.
    from lamina.agents.models import load_model, resolve_device
    from lamina.trainer.evaluate import format_result, held_out_eval
    from lamina.trainer.factories import make_policy
    from lamina.trainer.progress import TrainingProgress
    from lamina.trainer.restore import load_trained_model, resolve_checkpoint
    from lamina.trainer.validation import validate

    overridden = overridden or set()
    policy: Policy
    device = resolve_device(cfg.trainer.device)
    if checkpoint:
        ckpt, run_dir = resolve_checkpoint(checkpoint)
        cfg = inherit(cfg, run_config_of(run_dir), overridden)
        model, tokenizer, _ = load_trained_model(checkpoint)
        cast("torch.nn.Module", model).to(device)  # PreTrainedModel.to: transformers' @wraps hides its self
        policy = make_policy(cfg, model, tokenizer)
        title, default_out = f"{ckpt}", run_dir / "evals" / cfg.env.name
    elif ensemble:
        from lamina.study.ensemble import load_ensemble

        sweep, _, k = ensemble.rpartition(":")
        if not sweep or not k.isdigit():
            raise ValueError(f"ensemble={ensemble!r}; valid: ensemble=<sweep dir>:K, e.g. runs/sweep:3")
        policy = ensemble_policy = load_ensemble(sweep, int(k), device=str(device))
        cfg = inherit(cfg, ensemble_policy.run_config, overridden)
        title = f"ensemble of {', '.join(ensemble_policy.labels)}"
        default_out = Path(sweep) / f"ensemble-top{k}" / cfg.env.name
    else:
        model, tokenizer = load_model(cfg.model, device)
        policy = make_policy(cfg, model, tokenizer)
        name = Path(cfg.model.path).name if cfg.model.path else cfg.model.name
        title, default_out = f"base model {name}", Path("runs") / "eval" / f"{name}-{cfg.env.name}"
    try:
        validate(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, iterations=0)))
    except ConfigError as err:
        raise ValueError(str(err)) from None
    if cfg.eval.episodes < 1:
        raise ValueError(f"eval.episodes={cfg.eval.episodes} must be >= 1")
    target = Path(out) if out else default_out
    target.mkdir(parents=True, exist_ok=True)
    with TrainingProgress(cfg, enabled=cfg.trainer.progress, training=False) as progress:
        result = held_out_eval(cfg, policy, progress, f"eval ({title})")
    result["evaluated"] = title
    (target / "eval.json").write_text(json.dumps(result, indent=1))
    (target / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    print(format_result(result, title))
    return target


EVAL_ARGUMENTS = ("checkpoint", "ensemble", "out")


def cmd_eval(overrides: Sequence[str]) -> int:
    from lamina.commands.train import compose_config

    picked = {k: v for k, _, v in (o.partition("=") for o in overrides) if k in EVAL_ARGUMENTS}
    rest = [o for o in overrides if o.partition("=")[0] not in picked]
    overridden = {o.partition("=")[0].lstrip("+").split(".")[0] for o in rest}
    if "checkpoint" in picked and "ensemble" in picked:
        raise UsageError("give checkpoint=DIR or ensemble=SWEEP:K, not both")
    if ("checkpoint" in picked or "ensemble" in picked) and any(o.startswith("model") for o in rest):
        raise UsageError("the model comes from checkpoint=/ensemble=; leave out model=... there")
    cfg = compose_config(rest)
    try:
        out = run_evaluation(
            cfg, picked.get("checkpoint"), picked.get("ensemble"), picked.get("out"), overridden
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"written: {out}")
    return 0
