"""lamina export: a trained run becomes an HF folder that reloads and generates the same tokens."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lamina.agents.models import ModelConfig, load_model
from lamina.cli import compose_config, main
from lamina.trainer.checkpoint import load_checkpoint
from lamina.trainer.train import train

TINY_RUN = [
    "model=tiny-random",
    "rollout.group_size=2",
    "rollout.batch_size=1",
    "rollout.max_new_tokens=8",
    "env.max_steps=2",
    "env.train_tasks=1",
    "eval.episodes=0",
    "trainer.progress=false",
    "trainer.iterations=1",
    "layers=[2]",
    # Tied embeddings train too, so the export must keep the LM head tied to the trained tensor.
    "trainer.train_embeddings=true",
    "trainer.train_lm_head=true",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 1-iteration tiny run whose checkpoint tensors are then moved away from the base weights
    (one update of a random model on two equal-return episodes may not change them)."""
    out = tmp_path_factory.mktemp("run")
    train(compose_config([*TINY_RUN, f"trainer.output_dir={out}"]))
    ckpt = out / "checkpoints" / "iter_000001"
    tensors = load_file(str(ckpt / "trainable.safetensors"))
    assert "model.embed_tokens.weight" in tensors and any(n.startswith("model.layers.2.") for n in tensors)
    generator = torch.Generator().manual_seed(0)
    moved = {n: t + 0.05 * torch.randn(t.shape, generator=generator) for n, t in tensors.items()}
    save_file(moved, str(ckpt / "trainable.safetensors"))
    manifest = ckpt / "manifest.json"
    if manifest.exists():  # keep the checkpoint valid for lamina's integrity check
        import hashlib

        digests = json.loads(manifest.read_text())
        digests["trainable.safetensors"] = hashlib.sha256(
            (ckpt / "trainable.safetensors").read_bytes()
        ).hexdigest()
        manifest.write_text(json.dumps(digests, indent=1))
    return out, ckpt, moved


def lamina_model(ckpt):
    model, tokenizer = load_model(ModelConfig(name="tiny-random"))
    load_checkpoint(ckpt, model)
    return model.eval(), tokenizer


def greedy(model, ids, stop_ids):
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=stop_ids[0],
        )
    return out[0, ids.shape[1] :].tolist()


def test_export_reloads_and_generates_the_same_tokens(trained_run, tmp_path):
    run, ckpt, moved = trained_run
    out = tmp_path / "hf"
    assert main(["export", f"checkpoint={run}", f"out={out}"]) == 0
    assert {"config.json", "model.safetensors", "generation_config.json", "lamina_export.json"} <= {
        p.name for p in out.iterdir()
    }
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    reference, lamina_tokenizer = lamina_model(ckpt)

    # Tied embeddings survive: one tensor, equal to the trained one.
    assert exported.config.tie_word_embeddings
    assert exported.lm_head.weight.data_ptr() == exported.model.embed_tokens.weight.data_ptr()
    assert torch.equal(exported.model.embed_tokens.weight, moved["model.embed_tokens.weight"])
    name = next(n for n in moved if n.startswith("model.layers.2."))
    assert torch.equal(dict(exported.named_parameters())[name], moved[name])
    for key, value in reference.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value), key

    messages = [{"role": "user", "content": "Your task: open the chest. Admissible actions: 'go east'"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    lamina_ids = lamina_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt"
    )
    lamina_ids = lamina_ids["input_ids"] if not isinstance(lamina_ids, torch.Tensor) else lamina_ids
    assert torch.equal(ids, lamina_ids)
    stop_ids = exported.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_ids
    tokens = greedy(exported, ids, stop_ids)
    assert tokens == greedy(reference, ids, stop_ids) and len(tokens) > 0
    base, _ = load_model(ModelConfig(name="tiny-random"))
    assert greedy(base.eval(), ids, stop_ids) != tokens  # the trained tensors are what was exported

    info = json.loads((out / "lamina_export.json").read_text())
    assert info["iteration"] == 0 and "model.embed_tokens.weight" in info["trained_tensors"]


def test_export_of_a_checkpoint_folder_matches_the_run_folder(trained_run, tmp_path):
    run, ckpt, _ = trained_run
    assert main(["export", f"checkpoint={ckpt}", f"out={tmp_path / 'a'}"]) == 0
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert torch.equal(
        a["model.layers.2.mlp.up_proj.weight"],
        load_file(str(ckpt / "trainable.safetensors"))["model.layers.2.mlp.up_proj.weight"],
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["checkpoint=/nonexistent", "out=x"], "checkpoint='/nonexistent' is neither a run folder"),
        (["checkpoint=runs/x"], "missing out=...; usage: lamina export checkpoint=DIR out=DIR"),
        (["ckpt=runs/x", "out=y"], "unknown argument 'ckpt=runs/x'"),
    ],
)
def test_bad_export_arguments_fail_with_one_line(args, expected, capsys):
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_export_refuses_a_non_empty_out(trained_run, tmp_path, capsys):
    run, _, _ = trained_run
    (tmp_path / "keep.txt").write_text("x")
    assert main(["export", f"checkpoint={run}", f"out={tmp_path}"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
