"""What an arm forgot: its KL to the base model on the trained task, and its success on another task.

RL's Razor (Shenfeld, Pari, Agrawal 2025, arXiv 2509.04259) finds that forgetting follows the KL
between the fine-tuned and the base policy measured on the new task's own inputs. lamina measures,
on held-out tasks of the trained environment, in the states the trained policy visits (it plays
``study.forgetting_episodes`` held-out episodes at ``rollout.temperature``):

- ``kl_to_base``: the mean over decisions of the forward KL(pi_trained || pi_base)
  = sum_a pi_trained(a|s) (log pi_trained(a|s) - log pi_base(a|s)). In choose mode a decision is one
  state and the sum runs over its admissible actions, with pi = softmax(score / T) (the policy the
  agent samples from, so the KL is exact); in generate mode a decision is one response token and
  the sum runs over the vocabulary, teacher-forced on the trained policy's response, pi the
  temperature-T next-token distribution (the mean per-token KL).
- ``kl_base_to_trained``: the reverse, KL(pi_base || pi_trained), over the same decisions:
  RL's Razor writes its forgetting predictor with the base policy first, E_s[KL(pi_0 || pi)], as we
  read the paper; both are reported so either can be used.

The second number is the arm's held-out success on an environment it was not trained on
(``study.forgetting_env``, an ``env`` option such as ``frozenlake``, with
``study.forgetting_env_overrides``), played with ``lamina.trainer.evaluate.evaluate`` on that
environment's held-out seeds, the same episodes for every arm.

    result = measure_forgetting(Path("runs/sweep/block07-seed0"), episodes=16, other_env="frozenlake")
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import OmegaConf

from lamina.trainer.config import RunConfig

FILE = "forgetting.json"


def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i (log p_i - log q_i) over the last axis, from log-probabilities.

    Args:
        log_p, log_q: (..., K) normalised log-probabilities (-inf allowed where p_i = 0).
    Returns:
        (...,) the divergences, in nats.
    """
    log_p, log_q = log_p.double(), log_q.double()
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


def choice_kls(
    trained_scores: Sequence[torch.Tensor], base_scores: Sequence[torch.Tensor], temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-state KL(pi_trained || pi_base) and KL(pi_base || pi_trained) of choose-mode policies.

    Args:
        trained_scores, base_scores: per state, (K_i,) candidate scores of the same candidates.
        temperature: T > 0 of pi = softmax(score / T).
    Returns:
        two (N,) arrays.
    """
    forward, reverse = [], []
    for t, b in zip(trained_scores, base_scores, strict=True):
        lt = torch.log_softmax(t.double() / temperature, -1)
        lb = torch.log_softmax(b.double() / temperature, -1)
        forward.append(float(forward_kl(lt, lb)))
        reverse.append(float(forward_kl(lb, lt)))
    return np.array(forward), np.array(reverse)


def token_kls(
    trained_logits: torch.Tensor, base_logits: torch.Tensor, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token KLs of next-token distributions: (R, V) logits of the same positions -> two (R,)."""
    lt = torch.log_softmax(trained_logits.double() / temperature, -1)
    lb = torch.log_softmax(base_logits.double() / temperature, -1)
    return forward_kl(lt, lb).numpy(), forward_kl(lb, lt).numpy()


def run_config_of(run_dir: Path) -> RunConfig:
    """A run folder's ``config.yaml`` as a typed ``RunConfig`` (keys this version lacks dropped)."""
    import dataclasses

    raw = cast("dict[str, Any]", OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml")))
    known = {f.name for f in dataclasses.fields(RunConfig)}
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), {k: v for k, v in raw.items() if k in known})
    return cast(RunConfig, OmegaConf.to_object(merged))


def other_env_config(cfg: RunConfig, env: str, overrides: Sequence[str]) -> RunConfig:
    """``cfg`` with the ``env`` section of option ``env`` (``configs/env/<env>.yaml``) plus overrides.

    Raises:
        ConfigError: an unknown env option or a bad override, in one line.
    """
    from lamina.compose import compose

    other = compose("train", [f"env={env}", *overrides], RunConfig)
    out = copy.deepcopy(cfg)
    out.env = other.env
    return out


def _response_logits(model, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """(R, V) next-token logits at the response's positions, teacher-forced."""
    device = next(model.parameters()).device
    ids = torch.cat([prompt, response]).long().to(device)[None]
    logits = model(input_ids=ids).logits[0]
    start = len(prompt) - 1
    return logits[start : start + len(response)].float().cpu()


@torch.no_grad()
def kl_to_base(cfg: RunConfig, trained, base, tokenizer, episodes: int) -> dict:
    """The trained policy plays ``episodes`` held-out tasks; the KLs of its decisions (module docstring).

    Returns:
        ``kl_to_base``, ``kl_base_to_trained`` (means), ``kl_decisions`` and ``kl_temperature``.
    """
    from lamina.trainer.factories import make_policy, make_runner
    from lamina.trainer.rollout import collect_rollouts

    policy = make_policy(cfg, trained, tokenizer)
    seeds = [cfg.env.eval_seed_offset + i for i in range(episodes)]
    temperature = cfg.rollout.temperature
    forward: list[np.ndarray] = []
    reverse: list[np.ndarray] = []
    with make_runner(
        cfg, min(episodes, cfg.rollout.batch_size * cfg.rollout.group_size), evaluation=True
    ) as runner:
        for start in range(0, episodes, runner.num_envs):
            batch = collect_rollouts(
                policy,
                runner,
                seeds[start : start + runner.num_envs],
                1,
                max_steps=cfg.env.max_steps,
                prompt_cfg=cfg.agent,
                temperature=temperature,
                invalid_penalty=cfg.rollout.invalid_penalty,
            )
            prompts = [p.tolist() for p in batch.prompt_ids]
            if batch.candidates is not None:
                base_policy = make_policy(cfg, base, tokenizer)
                t_scores = policy.candidate_scores(prompts, batch.candidates)  # type: ignore[attr-defined]
                b_scores = base_policy.candidate_scores(prompts, batch.candidates)  # type: ignore[attr-defined]
                f, r = choice_kls(t_scores, b_scores, temperature)
            else:
                parts = [
                    token_kls(
                        _response_logits(trained, p, resp), _response_logits(base, p, resp), temperature
                    )
                    for p, resp in zip(batch.prompt_ids, batch.response_ids, strict=True)
                    if len(resp)
                ]
                f = np.concatenate([x for x, _ in parts]) if parts else np.zeros(0)
                r = np.concatenate([y for _, y in parts]) if parts else np.zeros(0)
            forward.append(f)
            reverse.append(r)
    fw, rv = np.concatenate(forward), np.concatenate(reverse)
    return {
        "kl_to_base": float(fw.mean()) if fw.size else float("nan"),
        "kl_base_to_trained": float(rv.mean()) if rv.size else float("nan"),
        "kl_decisions": int(fw.size),
        "kl_temperature": temperature,
    }


def measure_forgetting(
    run_dir: Path, episodes: int, other_env: str | None = None, other_overrides: Sequence[str] = ()
) -> dict:
    """Measures an arm's forgetting and writes ``forgetting.json`` into its folder.

    Args:
        run_dir: a finished arm (a run folder; the base arm has no checkpoint: its KL is 0).
        episodes: held-out episodes for the KL and for the other environment.
        other_env: an ``env`` option the arm was not trained on; None: KL only.
        other_overrides: overrides for the other environment (``env.max_steps=10``).
    Returns:
        the ``forgetting.json`` content: the ``kl_to_base`` fields, ``episodes``, and with
        ``other_env`` its name, ``other_success_rate`` and the per-episode ``other_seeds``/``other_won``.
    """
    from lamina.agents.models import load_model
    from lamina.trainer.checkpoint import latest_checkpoint, load_checkpoint
    from lamina.trainer.evaluate import evaluate
    from lamina.trainer.factories import make_policy, make_runner
    from lamina.trainer.restore import init_chain, load_trained_model

    run_dir = Path(run_dir)
    cfg = run_config_of(run_dir)
    base, tokenizer = load_model(cfg.model)
    for earlier in init_chain(run_dir):
        load_checkpoint(earlier, base)
    base.eval()
    result: dict[str, Any] = {"episodes": episodes}
    if latest_checkpoint(run_dir) is None:  # the base arm: the policy is the base model
        trained = base
        result.update(
            kl_to_base=0.0, kl_base_to_trained=0.0, kl_decisions=0, kl_temperature=cfg.rollout.temperature
        )
    else:
        trained, _, _ = load_trained_model(run_dir)
        result.update(kl_to_base(cfg, trained, base, tokenizer, episodes))
    if other_env:
        other = other_env_config(cfg, other_env, other_overrides)
        policy = make_policy(other, trained, tokenizer)
        count = min(episodes, other.rollout.batch_size * other.rollout.group_size)
        with make_runner(other, count, evaluation=True) as runner:
            played = evaluate(other, policy, runner, episodes)
        result.update(
            other_env=other_env,
            other_overrides=list(other_overrides),
            other_success_rate=played["success_rate"],
            other_mean_return=played["mean_return"],
            other_seeds=played["seeds"],
            other_won=played["won"],
        )
    (run_dir / FILE).write_text(json.dumps(_finite(result), indent=1))
    return result


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def is_measured(run_dir: Path, episodes: int, other_env: str | None, other_overrides: Sequence[str]) -> bool:
    """``forgetting.json`` exists with these settings (else it is measured again)."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return False
    saved = json.loads(path.read_text())
    return (
        saved.get("episodes") == episodes
        and saved.get("other_env") == other_env
        and list(saved.get("other_overrides", [])) == list(other_overrides if other_env else [])
    )


def measure_sweep(
    sweep_dir: Path, episodes: int, other_env: str | None, other_overrides: Sequence[str], say=print
) -> int:
    """``measure_forgetting`` for every finished arm of a sweep not yet measured with these
    settings; returns how many it measured. ``say`` gets one line per arm."""
    from lamina.study.arms import is_finished, parse_arm_name

    count = 0
    for run_dir in sorted(Path(sweep_dir).iterdir()):
        if parse_arm_name(run_dir.name) is None or not is_finished(run_dir):
            continue
        if is_measured(run_dir, episodes, other_env, other_overrides):
            continue
        result = measure_forgetting(run_dir, episodes, other_env, other_overrides)
        other = f", success on {other_env} {result['other_success_rate']:.3f}" if other_env else ""
        say(f"forgetting of {run_dir.name}: KL to base {result['kl_to_base']:.4f}{other}")
        count += 1
    return count
