#!/usr/bin/env bash
# The verl GPU path end to end on a CUDA host with vLLM (a few minutes on one GPU):
#   1. the host: GPUs, CUDA torch, vLLM, verl 0.9, lamina's plugin registered in verl;
#   2. the CPU tests of the verl integration (real verl code on the test CPU platform);
#   3. two iterations of `lamina train backend=verl` on TextWorld: vLLM rollout servers, FSDP2 actor
#      with one trainable block, GiGPO, KL to the reference; checks metrics.jsonl and checkpoints.
# Usage: scripts/gpu_smoke.sh [MODEL] [GPUS]   (defaults: Qwen/Qwen2.5-0.5B-Instruct, all visible GPUs)
# Needs network access to the HF hub for MODEL (or a local folder).
set -euo pipefail

MODEL="${1:-Qwen/Qwen2.5-0.5B-Instruct}"
GPUS="${2:-$(nvidia-smi --list-gpus | wc -l)}"
OUT="${OUT:-runs/gpu_smoke}"

echo "== 1. host"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python - <<'PY'
import importlib.metadata as md
import torch, vllm, verl
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), vllm {vllm.__version__}, verl {verl.__version__}")
assert verl.__version__.startswith("0.9."), "lamina targets verl 0.9"
assert any(e.name == "lamina" for e in md.entry_points(group="verl.plugins")), "lamina's verl plugin is not installed"
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
get_adv_estimator_fn("gigpo")  # registered by the plugin on `import verl`
print("lamina plugin: gigpo registered")
PY

echo "== 2. CPU tests of the verl integration"
python -m pytest -q tests/integrations/verl -m "not slow"

echo "== 3. two iterations with vLLM on ${GPUS} GPU(s): ${MODEL}"
rm -rf "${OUT}"
python -m lamina.integrations.verl.launch \
  backend=verl env=textworld algorithm=gigpo agent.mode=generate agent.think=false \
  model.name=custom "model.path=${MODEL}" model.dtype=bfloat16 layers=middle:1 \
  rollout.batch_size="${GPUS}" rollout.group_size=4 rollout.max_new_tokens=64 env.max_steps=4 \
  trainer.iterations=2 trainer.save_every=2 trainer.lr=1e-6 "trainer.output_dir=${OUT}" eval.episodes=0 \
  ++verl.n_gpus_per_node="${GPUS}" ++verl.mini_batches=1 ++verl.micro_batch_size=4 \
  ++verl.max_prompt_length=1024 ++verl.max_response_length=64 ++verl.gpu_memory_utilization=0.4 \
  ++verl.attn_implementation=sdpa

python - "${OUT}" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
assert [r["iteration"] for r in rows] == [0, 1], rows
assert all(r["rows"] > 0 for r in rows)
assert list((out / "checkpoints").glob("global_step_2")), "no verl checkpoint"
print("smoke ok:", json.dumps(rows[-1]))
PY
