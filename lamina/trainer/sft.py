"""``lamina sft``: a supervised warm start on expert trajectories, before RL.

    lamina sft env=alfworld agent.mode=generate layers=all sft.episodes=32
    lamina train env=alfworld agent.mode=generate init_from=runs/sft

The expert of each environment (``env.unwrapped.expert_action()``: TextWorld's walkthrough, the
ALFWorld PDDL planner, the Sokoban/FrozenLake solvers, WebShop's goal-product path) plays
``sft.episodes`` training tasks (random seeds, below ``env.train_tasks`` when set). Every step
becomes one row: the prompt exactly as RL builds it (``build_messages`` + the policy's
chat-template ``encode``) and, as the response, the expert action in the form the policy emits it:
``<action>{action}</action>`` then the end-of-turn token (generate mode), or the choose-mode
continuation of the action (the same text + EOS by default). The loss is the token-mean
cross-entropy of the response tokens only, on the blocks chosen by ``layers``/``modules`` (the same
grammar as ``lamina train``). The output folder holds ``config.yaml``, ``metrics.jsonl`` (one row
per epoch), ``sft.json`` and a checkpoint ``checkpoints/iter_NNNNNN`` (NNNNNN = the epochs done)
that ``lamina train init_from=DIR``, ``lamina export`` and ``lamina.trainer.restore`` read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.choose import ChoicePolicy
from lamina.agents.models import model_num_blocks
from lamina.agents.parsing import parse_step_action
from lamina.agents.policy import HFPolicy
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.compose import compose
from lamina.envs import resolve_env_id
from lamina.envs.runner import EnvGroupRunner
from lamina.errors import ConfigError
from lamina.trainer.checkpoint import save_checkpoint
from lamina.trainer.config import SftConfig, SftRunConfig
from lamina.trainer.factories import load_start_model, select_trainable
from lamina.trainer.layers import parse_layers
from lamina.trainer.run_folder import claim_run_folder
from lamina.trainer.update import pack_rows, response_log_probs

log = logging.getLogger(__name__)

GENERATE_TEMPLATE = "<action>{action}</action>"


@dataclass
class ExpertRows:
    """N supervised rows: ``prompt_ids`` N x (P_i,), ``response_ids`` N x (R_i,), ``actions`` N texts,
    ``episode_won`` (E,) and ``episode_lengths`` (E,) of the E expert episodes."""

    prompt_ids: list[torch.Tensor]
    response_ids: list[torch.Tensor]
    actions: list[str]
    episode_won: np.ndarray
    episode_lengths: np.ndarray

    def __post_init__(self):
        if not len(self.prompt_ids) == len(self.response_ids) == len(self.actions):
            raise ValueError("ExpertRows: prompt_ids, response_ids and actions need one entry per row")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def summary(self) -> dict[str, float | int]:
        """Counts for ``sft.json``: rows, episodes, tokens, the expert's success and episode length."""
        return {
            "episodes": len(self.episode_won),
            "rows": len(self),
            "response_tokens": int(sum(len(r) for r in self.response_ids)),
            "mean_prompt_tokens": float(np.mean([len(p) for p in self.prompt_ids])),
            "expert_success_rate": float(self.episode_won.mean()),
            "expert_mean_length": float(self.episode_lengths.mean()),
        }


def compose_sft_config(overrides: Sequence[str]) -> SftRunConfig:
    """``configs/sft.yaml`` with Hydra overrides as a typed ``SftRunConfig``.

    Raises:
        ConfigError: an unknown group option, an unknown key or a bad value, in one line.
    """
    return compose("sft", overrides, SftRunConfig)


def validate_sft(cfg: SftRunConfig) -> list[int]:
    """Checks the config without loading weights; returns the trainable block indices."""
    s = cfg.sft
    for key in ("episodes", "epochs", "batch_size", "micro_batch_size", "parallel_envs"):
        if getattr(s, key) < 1:
            raise ConfigError(f"sft.{key}={getattr(s, key)} must be >= 1")
    if not s.lr > 0:
        raise ConfigError(f"sft.lr={s.lr} must be > 0")
    if cfg.agent.mode not in ("generate", "choose"):
        raise ConfigError(f"agent.mode={cfg.agent.mode!r}; valid: generate, choose")
    try:
        resolve_env_id(cfg.env.name)
        blocks = parse_layers(cfg.layers, model_num_blocks(cfg.model))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not blocks and not (cfg.trainer.train_embeddings or cfg.trainer.train_lm_head):
        raise ConfigError(f"layers={cfg.layers!r} selects no block: SFT would train nothing")
    return blocks


def expert_seeds(cfg: SftRunConfig) -> list[int]:
    """``sft.episodes`` distinct training seeds, drawn as ``lamina train`` draws its tasks: below
    ``env.train_tasks`` when set (then at most that many), else below 2**31. Consecutive seeds
    would pick neighbouring games (ALFWorld sorts its games by task type)."""
    high = cfg.env.train_tasks or 2**31 - 1
    rng = np.random.default_rng([cfg.sft.seed, 5])  # its own stream, apart from train's task draws
    return [int(s) for s in rng.choice(high, size=min(cfg.sft.episodes, high), replace=False)]


def response_builder(cfg: PromptConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase):
    """``action -> response token ids`` in the form the ``agent.mode`` policy emits, and the policy."""
    policy: ChoicePolicy | HFPolicy
    if cfg.mode == "choose":
        policy = ChoicePolicy(model, tokenizer, score=cfg.choose_score)
        return (lambda action: policy.continuation_ids([action])[0]), policy
    policy = HFPolicy(model, tokenizer)
    eos = tokenizer.eos_token_id  # the end-of-turn token (<|im_end|> for SmolLM2's chat template)

    def generate_response(action: str) -> list[int]:
        text = GENERATE_TEMPLATE.format(action=action)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [eos]

    return generate_response, policy


def collect_expert_rows(
    runner: EnvGroupRunner,
    seeds: Sequence[int],
    encode,
    respond,
    prompt_cfg: PromptConfig,
    max_steps: int,
) -> ExpertRows:
    """Plays the expert on ``seeds`` (``runner.num_envs`` at a time) and records one row per step.

    An episode ends at termination, truncation, or when the expert has no action (it diverged
    or has none); a step whose expert action the parser rejects is not recorded and ends the episode.

    Args:
        encode: ``messages -> prompt token ids`` (the policy's ``encode``).
        respond: ``action -> response token ids``.
    """
    prompts, responses, actions = [], [], []
    won_all, lengths_all = [], []
    for start in range(0, len(seeds), runner.num_envs):
        chunk = list(seeds[start : start + runner.num_envs])
        n = len(chunk)
        observations, infos = runner.reset(chunk + [chunk[0]] * (runner.num_envs - n))
        memories = [EpisodeMemory(task=info["task"]) for info in infos[:n]]
        done = [False] * n
        won = [False] * n
        lengths = [0] * n
        for step in range(max_steps):
            experts = runner.expert_actions()
            step_actions: list[str | None] = [None] * runner.num_envs
            for t in range(n):
                if done[t]:
                    continue
                action, admissible = experts[t], infos[t]["admissible_actions"]
                # The parser decides, as in RL: WebShop's expert searches a query of its own.
                if action is None or not parse_step_action(f"<action>{action}</action>", infos[t]).valid:
                    done[t] = True
                    continue
                messages = build_messages(
                    prompt_cfg, memories[t], observations[t], admissible, step, max_steps
                )
                prompts.append(torch.as_tensor(encode(messages), dtype=torch.long))
                responses.append(torch.as_tensor(respond(action), dtype=torch.long))
                actions.append(action)
                step_actions[t] = action
            if all(a is None for a in step_actions):
                break
            next_obs, _, terminated, truncated, next_infos = runner.step(step_actions)
            for t in range(n):
                taken = step_actions[t]
                if taken is None:
                    continue
                memories[t].steps.append((observations[t], taken))
                observations[t], infos[t] = next_obs[t], next_infos[t]
                lengths[t] += 1
                won[t] = bool(next_infos[t].get("won", False))
                done[t] = bool(terminated[t] or truncated[t])
        won_all += won
        lengths_all += lengths
    return ExpertRows(prompts, responses, actions, np.asarray(won_all, bool), np.asarray(lengths_all))


def response_nll(
    model: PreTrainedModel,
    prompts: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    pad_id: int,
    total_tokens: int,
) -> torch.Tensor:
    """Summed negative log-likelihood of the response tokens, divided by ``total_tokens`` (the token
    count of the whole optimizer batch, so micro-batch losses add up to its token mean)."""
    rows = pack_rows(prompts, responses, pad_id)
    log_probs, _ = response_log_probs(model, rows)  # (B, R)
    mask = rows.response_mask.to(log_probs.device)
    return -(log_probs * mask).sum() / total_tokens


@torch.no_grad()
def expert_loss(model: PreTrainedModel, rows: ExpertRows, pad_id: int, micro_batch_size: int = 8) -> float:
    """Token-mean cross-entropy of the expert responses under ``model`` (no gradient)."""
    total = sum(len(r) for r in rows.response_ids)
    loss = 0.0
    for start in range(0, len(rows), micro_batch_size):
        chunk = range(start, min(start + micro_batch_size, len(rows)))
        loss += float(
            response_nll(
                model,
                [rows.prompt_ids[i] for i in chunk],
                [rows.response_ids[i] for i in chunk],
                pad_id,
                total,
            )
        )
    return loss


def train_epoch(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    trainable: Sequence[torch.nn.Parameter],
    rows: ExpertRows,
    cfg: SftConfig,
    pad_id: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """One shuffled pass; returns the epoch's mean batch loss (token-mean NLL) and mean grad norm."""
    model.train()
    order = torch.randperm(len(rows), generator=generator).tolist()
    losses, norms = [], []
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start : start + cfg.batch_size]
        tokens = sum(len(rows.response_ids[i]) for i in batch)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = 0.0
        for m in range(0, len(batch), cfg.micro_batch_size):
            micro = batch[m : m + cfg.micro_batch_size]
            loss = response_nll(
                model,
                [rows.prompt_ids[i] for i in micro],
                [rows.response_ids[i] for i in micro],
                pad_id,
                tokens,
            )
            loss.backward()
            batch_loss += float(loss.detach())
        norms.append(float(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)))
        optimizer.step()
        losses.append(batch_loss)
    model.eval()
    return {"loss": float(np.mean(losses)), "grad_norm": float(np.mean(norms)), "steps": len(losses)}


def play_expert(
    cfg: SftRunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> tuple[ExpertRows, float]:
    """The expert rows of ``sft.episodes`` training tasks, and the seconds it took to play them."""
    respond, policy = response_builder(cfg.agent, model, tokenizer)
    seeds = expert_seeds(cfg)
    t0 = time.perf_counter()
    with EnvGroupRunner(
        cfg.env.name,
        min(cfg.sft.parallel_envs, len(seeds)),
        num_workers=cfg.rollout.env_workers,
        env_kwargs=dict(cfg.env.kwargs),
        max_episode_steps=cfg.env.max_steps,
    ) as runner:
        rows = collect_expert_rows(runner, seeds, policy.encode, respond, cfg.agent, cfg.env.max_steps)
    if not len(rows):
        raise ConfigError(f"env={cfg.env.name!r}: its expert produced no action on seeds {seeds[:3]}...")
    return rows, time.perf_counter() - t0


def sft(cfg: SftRunConfig) -> Path:
    """Collects expert rows, trains the chosen blocks on them, and writes the output folder."""
    blocks = validate_sft(cfg)
    out = Path(cfg.sft.output_dir)
    # One run per folder, one writer at a time, as for lamina train (sft has no resume).
    with claim_run_folder(out, False, cfg.sft.overwrite, section="sft", can_resume=False):
        return _sft(cfg, blocks, out)


def _sft(cfg: SftRunConfig, blocks: list[int], out: Path) -> Path:
    """``sft`` in its claimed output folder."""
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    torch.manual_seed(cfg.sft.seed)
    model, tokenizer = load_start_model(cfg)
    model.eval()
    rows, collect_s = play_expert(cfg, model, tokenizer)
    names, trainable, optimizer = select_trainable(cfg, model, blocks, cfg.sft.lr, cfg.sft.weight_decay)
    generator = torch.Generator().manual_seed(cfg.sft.seed)
    summary = {
        **rows.summary(),
        "collect_s": collect_s,
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
    }
    log.info("sft: %d expert rows from %d episodes", len(rows), len(rows.episode_won))
    pad_id = tokenizer.pad_token_id
    if cfg.sft.measure_loss:
        summary["initial_loss"] = expert_loss(model, rows, pad_id, cfg.sft.micro_batch_size)
    with (out / "metrics.jsonl").open("w") as metrics_file:
        for epoch in range(cfg.sft.epochs):
            t1 = time.perf_counter()
            record = {
                "epoch": epoch,
                **train_epoch(model, optimizer, trainable, rows, cfg.sft, pad_id, generator),
            }
            record["epoch_s"] = time.perf_counter() - t1
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            print(
                f"sft epoch {epoch + 1}/{cfg.sft.epochs}  loss {record['loss']:.4f}  {record['epoch_s']:.0f}s"
            )
    summary["last_epoch_train_loss"] = record["loss"]
    if cfg.sft.measure_loss:
        summary["final_loss"] = expert_loss(model, rows, pad_id, cfg.sft.micro_batch_size)
    save_checkpoint(
        out, cfg.sft.epochs - 1, model, names, optimizer, {"blocks": blocks, "kind": "sft", **summary}
    )
    (out / "sft.json").write_text(json.dumps(summary, indent=1))
    return out
