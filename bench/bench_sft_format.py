"""Does ``lamina sft`` teach a model the action format? Generate-mode steps on held-out games whose
response holds a non-empty ``<action>...</action>`` block, before and after SFT.

    python bench/bench_sft_format.py env=alfworld env.kwargs.data_path=../shared/alfworld/json_2.1.1 \
        agent.mode=generate layers=all sft.episodes=24 sft.epochs=2 --eval-episodes 8 --eval-steps 15

Everything before the ``--`` options is a ``lamina sft`` override. The base model plays
``--eval-episodes`` held-out tasks (seeds from ``env.eval_seed_offset``, ``env.eval_kwargs`` merged
in: ALFWorld's in-distribution eval split) for at most ``--eval-steps`` steps at
``eval.temperature``; then ``sft`` runs; then the trained model plays the same tasks. Reported per
phase: steps, the share of steps in the format, the share of valid (admissible and executed)
actions, and success. Writes ``<sft.output_dir>/format.json``.
"""

from __future__ import annotations

import argparse
import json
import time

from lamina.agents.parsing import parse_action
from lamina.agents.policy import HFPolicy
from lamina.envs.runner import EnvGroupRunner
from lamina.trainer.rollout import collect_rollouts
from lamina.trainer.sft import SftRunConfig, compose_sft_config, sft


def format_stats(cfg: SftRunConfig, model, tokenizer, episodes: int, steps: int) -> dict:
    """Plays ``episodes`` held-out tasks once each and counts the steps in the action format."""
    policy = HFPolicy(
        model,
        tokenizer,
        max_new_tokens=cfg.rollout.max_new_tokens,
        micro_batch_size=cfg.rollout.micro_batch_size,
    )
    seeds = [cfg.env.eval_seed_offset + i for i in range(episodes)]
    t0 = time.perf_counter()
    with EnvGroupRunner(
        cfg.env.name,
        episodes,
        num_workers=cfg.rollout.env_workers,
        env_kwargs={**cfg.env.kwargs, **cfg.env.eval_kwargs},
        max_episode_steps=steps,
    ) as runner:
        batch = collect_rollouts(
            policy,
            runner,
            seeds,
            1,
            max_steps=steps,
            prompt_cfg=cfg.agent,
            temperature=cfg.eval.temperature,
            invalid_penalty=cfg.rollout.invalid_penalty,
        )
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in batch.response_ids]
    in_format = [bool(parse_action(text).action) for text in texts]  # tags present, action non-empty
    return {
        "episodes": episodes,
        "steps": len(texts),
        "format_rate": sum(in_format) / len(texts),
        "valid_action_rate": float(batch.action_valid.mean()),
        "success_rate": batch.success_rate,
        "examples": texts[:3],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="lamina sft overrides (key=value)")
    parser.add_argument("--eval-episodes", type=int, default=8)
    parser.add_argument("--eval-steps", type=int, default=15)
    args = parser.parse_args()
    from lamina.agents.models import load_model
    from lamina.trainer.restore import load_trained_model

    cfg = compose_sft_config(args.overrides)
    if cfg.agent.mode != "generate":
        raise SystemExit("this benchmark measures generate mode: pass agent.mode=generate")
    model, tokenizer = load_model(cfg.model)
    before = format_stats(cfg, model.eval(), tokenizer, args.eval_episodes, args.eval_steps)
    print("before SFT:", json.dumps({k: v for k, v in before.items() if k != "examples"}), flush=True)
    del model
    t0 = time.perf_counter()
    out = sft(cfg)
    sft_s = time.perf_counter() - t0
    model, tokenizer, _ = load_trained_model(out)
    after = format_stats(cfg, model, tokenizer, args.eval_episodes, args.eval_steps)
    print("after SFT:", json.dumps({k: v for k, v in after.items() if k != "examples"}), flush=True)
    result = {
        "overrides": args.overrides,
        "eval_episodes": args.eval_episodes,
        "eval_steps": args.eval_steps,
        "before": before,
        "after": after,
        "sft": json.loads((out / "sft.json").read_text()),
        "sft_s": sft_s,
    }
    (out / "format.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'format.json'}")


if __name__ == "__main__":
    main()
