"""The default job's pieces, built the way ``lamina train`` builds them, for benchmarks to time.

Full size: SmolLM2-135M on the default TextWorld task (2 tasks x 4 copies, choose mode). Quick
(``--quick``, CI): the tiny random model on FrozenLake.
"""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
from pathlib import Path

import torch

from lamina.commands.train import compose_config
from lamina.envs.seeds import task_seeds
from lamina.trainer.config import RunConfig
from lamina.trainer.factories import build_learner, make_policy, make_runner
from lamina.trainer.progress import TrainingProgress
from lamina.trainer.rollout import CHOICE_FIELDS, PER_ROW_FIELDS, RolloutBatch, collect_rollouts
from lamina.trainer.train import run_iteration
from lamina.trainer.validation import validate

QUICK = ["model=tiny-random", "env=frozenlake", "env.max_steps=3"]
# The block the default job trains alone (layers=middle:1): 15 of SmolLM2's 30, 2 of the tiny 4.
ONE_BLOCK = {False: "[15]", True: "[2]"}


def config(quick: bool, *overrides: str) -> RunConfig:
    out = tempfile.mkdtemp(prefix="lamina-bench-")
    base = [f"trainer.output_dir={out}", "eval.episodes=0", "eval.base=false", "trainer.progress=false"]
    return compose_config([*(QUICK if quick else []), *base, *overrides])


def build(cfg: RunConfig, optimized: bool = True):
    """(learner, policy) as ``train`` builds them; ``optimized=False`` is the path before issue 9:
    no frozen prefix, every row scored on its own with its whole prompt."""
    if not optimized:
        cfg.trainer.update.frozen_prefix = False
    torch.manual_seed(cfg.trainer.seed)
    learner = build_learner(cfg, validate(cfg))
    policy = make_policy(cfg, learner.model, learner.tokenizer)
    if hasattr(policy, "share_states"):
        policy.share_states = policy.share_prefixes = optimized
    return learner, policy


def rollout_batch(quick: bool, path: Path) -> Path:
    """One rollout of the default job's first iteration (untrained model), pickled to ``path``."""
    cfg = config(quick, "layers=none")
    learner, policy = build(cfg)
    with make_runner(cfg, cfg.rollout.batch_size * cfg.rollout.group_size) as runner:
        batch = collect_rollouts(
            policy,
            runner,
            task_seeds(cfg.env, cfg.trainer.seed, 0, cfg.rollout.batch_size),
            cfg.rollout.group_size,
            max_steps=cfg.env.max_steps,
            prompt_cfg=cfg.agent,
            temperature=cfg.rollout.temperature,
            invalid_penalty=cfg.rollout.invalid_penalty,
        )
    path.write_bytes(pickle.dumps(batch))
    return path


def load_batch(path: Path) -> RolloutBatch:
    return pickle.loads(Path(path).read_bytes())


def keep_first_rows(path: Path, n: int) -> Path:
    """Rewrites the pickled batch at ``path`` with its first ``n`` rows (episode fields kept)."""
    batch = load_batch(path)
    fields = PER_ROW_FIELDS + CHOICE_FIELDS
    rows = {f: getattr(batch, f)[:n] for f in fields if getattr(batch, f) is not None}
    path.write_bytes(pickle.dumps(dataclasses.replace(batch, **rows)))
    return path


def timed_iterations(quick: bool, optimized: bool, iterations: int, *overrides: str) -> list[dict]:
    """``iterations`` default-job iterations (rollout + update) with the same seeds; their metrics
    rows (``rollout_s``, ``update_s``)."""
    cfg = config(quick, *overrides)
    learner, policy = build(cfg, optimized)
    rows = []
    with (
        make_runner(cfg, cfg.rollout.batch_size * cfg.rollout.group_size) as runner,
        TrainingProgress(cfg, enabled=False) as progress,
    ):
        for iteration in range(iterations):
            rows.append(run_iteration(cfg, iteration, learner, policy, runner, progress))
    return rows
