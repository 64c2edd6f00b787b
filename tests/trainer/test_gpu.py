"""On CUDA: two training iterations with a bf16 body (fp32 master weights, autocast), and the
layer-selection invariants there. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lamina.cli import compose_config
from lamina.trainer.factories import build_learner, make_policy, make_runner
from lamina.trainer.progress import TrainingProgress
from lamina.trainer.train import run_iteration, train
from lamina.trainer.validation import validate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

GPU_RUN = [
    "model=tiny-random",
    "model.dtype=bfloat16",
    "trainer.device=cuda",
    "env=frozenlake",
    "env.max_steps=3",
    "rollout.group_size=4",
    "rollout.batch_size=2",
    "eval.episodes=2",
    "trainer.progress=false",
    "layers=[2]",
]


@pytest.mark.parametrize("mode", ["choose", "generate"])
def test_two_iterations_on_cuda_in_bf16(tmp_path, mode):
    cfg = compose_config(
        [*GPU_RUN, f"agent.mode={mode}", "trainer.iterations=2", f"trainer.output_dir={tmp_path}"]
    )
    learner = build_learner(cfg, validate(cfg))
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
    assert all(p.device.type == "cuda" for p in learner.model.parameters())
    assert all(p.dtype == torch.float32 for p in learner.trainable)
    frozen = [n for n in before if n not in learner.names]
    assert all(before[n].dtype == torch.bfloat16 for n in frozen)
    held = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in learner.trainable}

    policy = make_policy(cfg, learner.model, learner.tokenizer)
    records = []
    with make_runner(cfg, 8) as runner, TrainingProgress(cfg, enabled=False) as progress:
        for iteration in range(2):
            records.append(run_iteration(cfg, iteration, learner, policy, runner, progress))
    assert all(r["skipped_steps"] == 0 for r in records)
    params = dict(learner.model.named_parameters())
    assert all(torch.equal(params[n], before[n]) for n in frozen)
    assert all(n.startswith("model.layers.2.") for n in learner.names)
    assert all(torch.isfinite(params[n]).all() for n in learner.names)


def test_run_on_cuda_writes_checkpoint_and_eval(tmp_path):
    out = train(compose_config([*GPU_RUN, "trainer.iterations=1", f"trainer.output_dir={tmp_path}"]))
    trained = load_file(str(out / "checkpoints" / "iter_000001" / "trainable.safetensors"))
    assert trained and all(t.dtype == torch.float32 for t in trained.values())
    assert (out / "eval.json").exists()
