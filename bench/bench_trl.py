"""One GRPO iteration in lamina vs one step of TRL's ``GRPOTrainer`` on the same single-turn task.

    python -m bench.bench_trl [--quick]          # needs TRL: pip install -e ".[bench]"

Both sides, each in a fresh process, on CPU in float32:
- task: ``arithmetic`` (one question, one answer); each step poses the task of lamina's seed for that
  iteration (``task_seeds``), with the prompt lamina builds (``build_messages``: system + user turn,
  the model's chat template, generation prompt). TRL gets the same messages as a conversational
  dataset, in the same order (no shuffling), and a reward function that scores like lamina's
  rollout: the last ``<action>`` block goes to the environment, 1 if right, minus
  ``rollout.invalid_penalty`` when unreadable.
- model: SmolLM2-135M-Instruct (quick: the tiny random Llama, saved to a folder for TRL).
- sizes: 1 prompt x 16 completions per step, at most 32 new tokens (quick: 4 completions of at most
  16 tokens), temperature 1.0, plain sampling
  (no top-k/top-p), 1 PPO epoch, clip 0.2, token-mean loss (TRL's ``dapo``), group-std advantages,
  lr 1e-4 (constant), grad-norm clip 1.0, and a KL term to the initial weights with coefficient 0.01
  on both (lamina's ``low_var_kl``; TRL's ``beta=0.01`` k3 estimator), so both compute reference
  log-probs every step.
- trained parameters: the same set on both, from lamina's own selection (all blocks, or the middle
  block: 15 of 30, 2 of the tiny 4); embeddings, LM head and the final norm stay frozen. TRL gets
  the model with the rest set to ``requires_grad=False``.

What is timed. TRL: ``on_step_begin`` to ``on_step_end`` of one trainer step (generation, rewards,
reference forward, forward/backward of the 16 sequences in one micro-batch, optimizer step; its
logging after the step is not counted). lamina: ``rollout_s + update_s`` of one iteration from
``metrics.jsonl`` (rollout, advantages, reference, 1 epoch of micro-batches of 8, optimizer step).
Each side runs ``STEPS`` steps; the first warms up, the best of the others counts (the machine may
be shared). TRL's settings that would only slow it are off: gradient checkpointing (its default),
bf16, logging, checkpoints.

Differences that remain: lamina's reference is its own initial copy of the trainable tensors
(swapped in; the forward starts at the lowest trainable block) where TRL keeps a second full model;
lamina stops a completion at ``</action>`` as well as at end of turn, TRL only at end of turn (each
row shows the mean completion length of the timed step; the tiny random model runs to the limit on
both). Completions are sampled, so the two sides' lengths differ from run to run.

Where vLLM is installed, a third row runs lamina's side again with ``rollout.engine=vllm`` (block 15
alone; the weight sync after each update is inside ``update_s``) against the same TRL row. Not in
quick mode: vLLM's CPU attention has no kernel for the tiny model's head size, and a wider tiny
model would need its own TRL run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

from bench.common import Row, in_fresh_process

STEPS = {True: 2, False: 4}  # per side: one warm-up step, then the timed ones
# (completions per step, max new tokens); quick mode only checks that the rows come out, in seconds
SIZES = {True: (4, 16), False: (16, 32)}
ONE_BLOCK = "middle:1"  # the default job's block: 15 of SmolLM2's 30, 2 of the tiny model's 4
TARGETS = {"all": 0.6, ONE_BLOCK: 0.3}
TRL_HINT = 'install it with pip install -e ".[bench]"'
VLLM = ["rollout.engine=vllm", "rollout.vllm_memory=0.12"]  # 12% of host RAM for its KV cache


def overrides(quick: bool, layers: str, steps: int, out: str) -> list[str]:
    return [
        "env=arithmetic",
        f"model={'tiny-random' if quick else 'smollm2-135m'}",
        "algorithm=grpo",
        "agent.mode=generate",
        f"rollout.group_size={SIZES[quick][0]}",
        "rollout.batch_size=1",
        f"rollout.max_new_tokens={SIZES[quick][1]}",
        "rollout.temperature=1.0",
        "trainer.update.ppo_epochs=1",
        "trainer.device=cpu",
        "model.dtype=float32",
        f"layers={layers}",
        f"trainer.iterations={steps}",
        f"trainer.output_dir={out}",
        "trainer.progress=false",
        "eval.episodes=0",
        "eval.base=false",
        "logging.tensorboard=false",
        "logging.curves=false",
    ]


def lamina_steps(quick: bool, layers: str, engine: tuple[str, ...] = ()) -> list[dict]:
    """``lamina train`` for STEPS iterations; each iteration's seconds and mean response tokens."""
    from lamina.commands.train import compose_config
    from lamina.trainer.train import train

    with tempfile.TemporaryDirectory() as tmp:
        out = train(compose_config([*overrides(quick, layers, STEPS[quick], tmp), *engine]))
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [
        {"s": m["rollout_s"] + m["update_s"], "tokens": m["mean_response_tokens"]}
        for m in metrics
        if m.get("kind", "train") == "train"
    ]


def _model_folder(quick: bool, cfg, tmp: str) -> str:
    """The folder TRL loads the policy (and builds its reference) from."""
    from lamina.agents.models import load_model, smollm2_checkpoint

    if not quick:
        return str(smollm2_checkpoint())
    model, tokenizer = load_model(cfg.model)  # the tiny random Llama exists only in memory
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp


def trl_steps(quick: bool, layers: str) -> list[dict]:
    """TRL's GRPOTrainer for STEPS steps on lamina's prompts; each step's seconds and mean tokens."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lamina.agents.parsing import parse_action
    from lamina.agents.prompt import EpisodeMemory, build_messages
    from lamina.commands.train import compose_config
    from lamina.envs.registry import make
    from lamina.envs.seeds import task_seeds
    from lamina.trainer.layers import apply_layer_selection, trainable_parameter_names
    from lamina.trainer.validation import validate

    steps = STEPS[quick]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(overrides(quick, layers, steps, str(Path(tmp) / "run")))
        env = make(cfg.env.name, max_episode_steps=cfg.env.max_steps, **cfg.env.kwargs)
        records = []
        for iteration in range(steps):
            (seed,) = task_seeds(cfg.env, cfg.trainer.seed, iteration, cfg.rollout.batch_size)
            observation, info = env.reset(seed=seed)
            messages = build_messages(
                cfg.agent,
                EpisodeMemory(task=info["task"]),
                observation,
                info["admissible_actions"],
                0,
                cfg.env.max_steps,
            )
            records.append({"prompt": messages, "seed": seed})

        lengths: list[float] = []

        def arithmetic_reward(completions, seed, completion_ids, **_) -> list[float]:
            rewards = []
            for completion, task_seed in zip(completions, seed, strict=True):
                parsed = parse_action(completion[-1]["content"], None)
                env.reset(seed=task_seed)
                _, reward, _, _, step_info = env.step(parsed.action)
                valid = parsed.valid and step_info.get("action_valid", True)
                rewards.append(float(reward) - (0.0 if valid else cfg.rollout.invalid_penalty))
            lengths.append(sum(len(c) for c in completion_ids) / len(completion_ids))
            return rewards

        times: list[float] = []

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self.begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                times.append(time.perf_counter() - self.begin)

        folder = _model_folder(quick, cfg, str(Path(tmp) / "model"))
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        apply_layer_selection(model, trainable_parameter_names(model, validate(cfg), cfg.modules))
        loss = cfg.algorithm.loss
        args = GRPOConfig(
            output_dir=str(Path(tmp) / "trl"),
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            disable_tqdm=True,
            max_steps=steps,
            seed=cfg.trainer.seed,
            shuffle_dataset=False,
            per_device_train_batch_size=cfg.rollout.group_size,
            gradient_accumulation_steps=1,
            num_generations=cfg.rollout.group_size,
            max_completion_length=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            top_p=1.0,
            top_k=0,
            num_iterations=cfg.trainer.update.ppo_epochs,
            beta=loss.kl_coef,
            epsilon=loss.clip_ratio,
            loss_type="dapo",  # token-mean over the batch, as lamina's loss_agg_mode=token-mean
            scale_rewards="group",
            learning_rate=cfg.trainer.lr,
            lr_scheduler_type="constant",
            weight_decay=cfg.trainer.weight_decay,
            max_grad_norm=cfg.trainer.update.max_grad_norm,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=arithmetic_reward,
            args=args,
            train_dataset=Dataset.from_list(records),
            callbacks=[StepTimer()],
        )
        trainer.train()
    return [{"s": s, "tokens": t} for s, t in zip(times, lengths, strict=True)]


def _best(steps: list[dict]) -> dict:
    return min(steps[1:], key=lambda step: step["s"])


def rows(quick: bool) -> list[Row]:
    try:
        import trl
    except ImportError as err:
        raise ImportError(f"bench_trl needs TRL, which is not installed ({err}); {TRL_HINT}") from None
    model = "tiny random Llama" if quick else "SmolLM2-135M"
    completions, tokens = SIZES[quick]
    blocks = 4 if quick else 30
    arms = [(layers, (), target) for layers, target in TARGETS.items()]
    if not quick and importlib.util.find_spec("vllm") is not None:
        arms.append((ONE_BLOCK, tuple(VLLM), TARGETS[ONE_BLOCK]))
    result, trl_rows = [], {}
    for layers, engine, target in arms:
        if layers not in trl_rows:
            trl_rows[layers] = _best(in_fresh_process(trl_steps, quick, layers)[0])
        trl_best = trl_rows[layers]
        lamina_best = _best(in_fresh_process(lamina_steps, quick, layers, engine)[0])
        ratio = lamina_best["s"] / trl_best["s"]
        which = "all blocks" if layers == "all" else f"block {blocks // 2} alone"
        if engine:
            which += ", lamina sampling with vLLM (CPU build)"
        result.append(
            Row(
                f"GRPO iteration, {which} (arithmetic, 1 prompt x {completions} completions <= {tokens} "
                f"tokens, {model}, "
                "KL reference on both)",
                f"TRL {trl.__version__} GRPOTrainer: {trl_best['s']:.1f} s/step "
                f"({trl_best['tokens']:.0f} tokens/completion)",
                f"{lamina_best['s']:.1f} s/iteration ({lamina_best['tokens']:.0f} tokens/completion)",
                ratio,
                f"<= {target}x",
                ratio <= target,
            )
        )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in rows(parser.parse_args().quick):
        print(" | ".join(row.cells()))
