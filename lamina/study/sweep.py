"""``lamina sweep``: train base, full and each chosen block alone, then score each block's contribution.

    lamina sweep study.layers=[0,7,15,22,29] study.seeds=[0,1] eval.episodes=64
    lamina sweep study=demo

The sweep folder (``study.output_dir``) holds one run folder per arm (``base-seed0``, ``full-seed0``,
``block07-seed0``, ...), ``sweep.yaml`` (the settings), and after the arms ``contribution.csv``,
``contribution.md``, ``contribution.png``, ``differences.csv`` (``lamina.study.power``) and
``summary.json``; with ``study.forgetting_episodes`` each arm folder also gets ``forgetting.json``.
Running the same command again skips finished arms, resumes half-finished ones from their newest
checkpoint, and retries failed ones; adding blocks or seeds extends the sweep.

One sweep per folder, one sweep process at a time: the sweep holds the folder's writer lock
(``.lamina.lock``, ``lamina.trainer.run_folder``) while it runs, and each arm's run holds its own
arm folder's (in this process or a Ray worker; the sweep's lock is never asked for by an arm). A
folder whose ``sweep.yaml`` has other shared settings, or that holds files but no ``sweep.yaml``,
is refused unless ``study.overwrite=true``, which deletes the old sweep's outputs first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from lamina.agents.models import model_num_blocks
from lamina.errors import ConfigError, TrainingStopped
from lamina.study.arms import (
    EXTRA_FOLDERS,
    arm_config,
    arm_memory_gib,
    check_same_settings,
    extra_arms,
    is_finished,
    pin_top_arms,
    prune_checkpoints,
    study_arms,
    write_arm_plan,
)
from lamina.study.config import SweepConfig, validate_study
from lamina.study.contribution import (
    add_arm_details,
    contribution_table,
    load_scores,
    markdown,
    summary,
    write_csv,
)
from lamina.study.executors import ArmState, SweepStatus, run_ray, run_serial
from lamina.study.plots import plot_arms, plot_contribution
from lamina.study.power import differences_csv, sweep_power
from lamina.trainer.config import RunConfig
from lamina.trainer.layers import parse_layers
from lamina.trainer.run_folder import contents, folder_lock, remove_outputs

log = logging.getLogger(__name__)

# What a sweep writes into its folder (top-level names, glob patterns), deleted by study.overwrite=true.
SWEEP_OUTPUTS = (
    "base-seed*",
    "full-seed*",
    "block*-seed*",
    *EXTRA_FOLDERS,
    "arms.json",
    "sweep.yaml",
    "contribution.*",
    "arms.png",
    "differences.csv",
    "summary.json",
    "ensemble-top*",
    "*.partial",
)


def sweep_blocks(cfg: SweepConfig) -> tuple[list[int], int]:
    """``(the single-block arms' blocks, L)``; checks every arm's settings without loading weights.

    Raises:
        ConfigError: a bad study value or a setting ``lamina train`` would refuse.
    """
    from lamina.trainer.validation import validate

    validate_study(cfg.study)
    if cfg.eval.episodes < 1:
        raise ConfigError(
            f"eval.episodes={cfg.eval.episodes}: a sweep scores each arm on held-out episodes; give >= 1"
        )
    if cfg.trainer.overwrite:
        raise ConfigError(
            "trainer.overwrite=true: a sweep's arms always resume their own folders; to start the sweep "
            "over, use study.overwrite=true"
        )
    if cfg.trainer.iterations < 1:
        raise ConfigError(
            f"trainer.iterations={cfg.trainer.iterations}: the trained arms need >= 1 iteration"
        )
    try:
        num_blocks = model_num_blocks(cfg.model)
        blocks = parse_layers(cfg.study.layers, num_blocks)
    except ValueError as err:
        raise ConfigError(str(err).replace("layers=", "study.layers=", 1)) from None
    extra_arms(cfg.study, num_blocks, cfg.trainer.lr)  # study.arms and study.lr_per_arm, checked early
    if not blocks:
        raise ConfigError(f"study.layers={cfg.study.layers!r} selects no block; e.g. all, [0, 7, 15], 10-14")
    shared = cfg.run_config()
    shared.layers = "all"
    validate(shared)  # the full arm's settings are every trained arm's but for the layers
    if cfg.study.forgetting_env:
        from lamina.study.forgetting import other_env_config

        validate(other_env_config(shared, cfg.study.forgetting_env, cfg.study.forgetting_env_overrides))
    return blocks, num_blocks


def analyze_sweep(sweep_dir: Path, cfg: SweepConfig, num_blocks: int):
    """Writes ``contribution.csv``, ``.md``, ``.png``, ``arms.png`` and ``summary.json`` from the
    finished arms.

    Returns:
        the ``ContributionTable``.
    """
    study = cfg.study
    try:
        scores = load_scores(sweep_dir, study.metric)
        table = contribution_table(
            scores,
            num_blocks,
            study.bootstrap,
            study.confidence,
            study.bootstrap_seed,
        )
    except ValueError as err:
        raise TrainingStopped(f"{sweep_dir}: no contribution table yet: {err}") from None
    title = sweep_title(cfg)
    add_arm_details(table, sweep_dir, study.bootstrap, study.confidence, study.bootstrap_seed)
    power = sweep_power(scores, table, study)
    (sweep_dir / "differences.csv").write_text(differences_csv(power.differences))
    write_csv(table, sweep_dir / "contribution.csv")
    (sweep_dir / "contribution.md").write_text(
        markdown(table, f"Layer contribution: {title}") + "\n" + "\n".join(power.markdown(table))
    )
    plot_contribution(table, sweep_dir / "contribution.png", title)
    plot_arms(table, scores, sweep_dir / "arms.png", title)
    (sweep_dir / "summary.json").write_text(
        json.dumps({"title": title, **summary(table), "power": power.summary()}, indent=1)
    )
    return table


def sweep_title(cfg: RunConfig) -> str:
    """One line naming what the sweep trained: model, env, algorithm, iterations."""
    model = cfg.model.path or cfg.model.name
    n = cfg.trainer.iterations
    return f"{model}, {cfg.env.name}, {cfg.algorithm.estimator}, {n} iteration{'' if n == 1 else 's'}"


def run_sweep(
    cfg: SweepConfig,
    train_fn: Callable[[RunConfig], Path] | None = None,
    console: Console | None = None,
) -> Path:
    """Runs every unfinished arm, then writes the contribution outputs; returns the sweep folder.

    Args:
        cfg: the composed sweep config.
        train_fn: runs one arm (``lamina.backend.train`` by default; serial executor only).
        console: where the table of arms is printed.
    Raises:
        ConfigError: bad settings, or settings that differ from the sweep already in the folder.
        TrainingStopped: some arms failed (named, with ``error.txt`` in their folders).
    """
    blocks, num_blocks = sweep_blocks(cfg)
    sweep_dir = Path(cfg.study.output_dir).resolve()  # Ray workers may run in another directory
    shared = cfg.run_config()
    # The sweep process alone holds the sweep folder's lock; each arm's run holds its own folder's.
    with folder_lock(sweep_dir, "study.output_dir"):
        prepare_sweep_folder(sweep_dir, cfg, shared)
        return _run_arms(cfg, sweep_dir, shared, blocks, num_blocks, train_fn, console or Console())


def prepare_sweep_folder(sweep_dir: Path, cfg: SweepConfig, shared: RunConfig) -> None:
    """Decides what the (locked) sweep folder's contents mean, then records ``sweep.yaml``.

    A folder with the ``sweep.yaml`` of the same shared settings is this sweep, resumed or extended;
    with ``study.overwrite=true`` lamina's outputs in it (arm folders, ``sweep.yaml``, tables, plots)
    are deleted first, whatever they were; anything else that is not empty is refused.

    Raises:
        ConfigError: the folder holds a sweep with other settings, or files but no sweep.
    """
    key = "study.output_dir"
    entries = contents(sweep_dir)
    if cfg.study.overwrite:
        if entries:
            log.warning("study.overwrite=true: deleting the previous sweep's outputs in %s", sweep_dir)
            remove_outputs(sweep_dir, SWEEP_OUTPUTS)
    elif (sweep_dir / "sweep.yaml").exists():
        try:
            check_same_settings(sweep_dir, shared)
        except ConfigError as err:
            raise ConfigError(f"{err}; or study.overwrite=true to delete it and start over") from None
    elif entries:
        names = ", ".join(p.name for p in entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"{key}={str(sweep_dir)!r} holds files but no sweep.yaml ({names}); replace them with "
            f"study.overwrite=true, or choose another {key}"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def _run_arms(
    cfg: SweepConfig,
    sweep_dir: Path,
    shared: RunConfig,
    blocks: list[int],
    num_blocks: int,
    train_fn: Callable[[RunConfig], Path] | None,
    console: Console,
) -> Path:
    """``run_sweep`` in its claimed folder: the unfinished arms, then the contribution outputs."""
    planned = study_arms(cfg.study, blocks, num_blocks, shared.trainer.lr)
    memory = {arm.name(num_blocks): arm_memory_gib(cfg.study, arm) for arm in planned}  # by spec as written
    arms = pin_top_arms(planned, sweep_dir, num_blocks)
    write_arm_plan(sweep_dir, shared, arms, num_blocks)  # arms.json: layers, lr, trainable parameters
    states = [ArmState(arm, arm.name(num_blocks)) for arm in arms]
    status = SweepStatus(states, cfg.study.metric, console)
    jobs = []
    for arm, state in zip(arms, states, strict=True):
        arm_cfg = arm_config(shared, arm, sweep_dir, num_blocks)
        if is_finished(Path(arm_cfg.trainer.output_dir)):
            status.already_finished(state.name, Path(arm_cfg.trainer.output_dir))
        else:
            jobs.append((state.name, arm_cfg))
    if cfg.study.executor == "ray" and jobs:
        _prepare_model_cache(cfg)
        for _, arm_cfg in jobs:
            arm_cfg.trainer.progress = False  # parallel progress bars would interleave
        study = cfg.study
        run_ray(jobs, status, study.ray_address, study.gpus_per_arm, study.cpus_per_arm, memory)
    elif jobs:
        from lamina.backend import train

        run_serial(jobs, status, train_fn or train)
    else:
        status.show()
    if cfg.study.keep_checkpoints == "last":
        for state in states:
            if state.status in ("done", "finished before"):
                prune_checkpoints(sweep_dir / state.name)
    if cfg.study.forgetting_episodes:
        from lamina.study.forgetting import measure_sweep

        study = cfg.study
        measure_sweep(
            sweep_dir,
            study.forgetting_episodes,
            study.forgetting_env,
            study.forgetting_env_overrides,
            console.print,
        )
    failed = ", ".join(s.name for s in status.failed)
    retry = "see error.txt in each; run the same command again to retry them"
    try:
        table = analyze_sweep(sweep_dir, cfg, num_blocks)
    except TrainingStopped as err:
        raise TrainingStopped(f"{err}; failed arm(s): {failed} ({retry})" if failed else str(err)) from None
    console.print(table.verdict())
    best = table.best
    if best is not None:
        c = "" if table.degenerate else f", C = {best.contribution:.3f}"
        console.print(f"best single block: {best.block} (S = {best.score:.3f}{c})")
    if failed:
        raise TrainingStopped(
            f"{len(status.failed)} arm(s) failed: {failed} ({retry}); the table uses the finished arms"
        )
    return sweep_dir


def _prepare_model_cache(cfg: RunConfig) -> None:
    """Builds the cached SmolLM2 checkpoint once here, so parallel arms do not all build it."""
    if not cfg.model.path:
        from lamina.agents.models import smollm2_checkpoint

        smollm2_checkpoint()
