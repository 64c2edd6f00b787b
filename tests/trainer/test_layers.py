"""Layer selection: parsing, generic block discovery, and the freezing invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from lamina.agents.policy import HFPolicy
from lamina.algorithms.losses import LossConfig
from lamina.trainer.layers import (
    ReferenceWeights,
    apply_layer_selection,
    find_blocks,
    param_groups,
    parse_layers,
    trainable_parameter_names,
)
from lamina.trainer.rollout import single_step_batch
from lamina.trainer.update import UpdateConfig, ppo_update


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ([14], [14]),
        ([12, 10, 11, 11], [10, 11, 12]),
        ("10-14", [10, 11, 12, 13, 14]),
        ("7", [7]),
        ("[3, 1]", [1, 3]),
        (5, [5]),
        ("middle:1", [15]),
        ("middle:4", [13, 14, 15, 16]),
        ("all", list(range(30))),
        ("none", []),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 30) == expected


@pytest.mark.parametrize("spec", [[99], "30", "28-31", [-1], "middle:31"])
def test_parse_layers_out_of_range_names_L(spec):
    with pytest.raises(ValueError, match="L=30"):
        parse_layers(spec, 30)


@pytest.mark.parametrize("spec", ["first", "1..3", [1.5], True, "5-2"])
def test_parse_layers_rejects_junk(spec):
    with pytest.raises(ValueError, match="layers="):
        parse_layers(spec, 30)


def test_top_k_of_sweep(tmp_path):
    (tmp_path / "contribution.csv").write_text("block,contribution\nbase,0\n3,0.2\n1,0.9\n2,1.1\n")
    assert parse_layers(f"top:2@{tmp_path}", 4) == [1, 2]
    with pytest.raises(ValueError, match="contribution.csv"):
        parse_layers(f"top:2@{tmp_path / 'missing'}", 4)


FAMILIES = {
    "llama": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ),
    "qwen3": lambda: transformers.Qwen3ForCausalLM(
        transformers.Qwen3Config(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        )
    ),
    "mistral": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ),
    "gemma": lambda: transformers.GemmaForCausalLM(
        transformers.GemmaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        )
    ),
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64)
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_block_discovery_and_selection_across_families(family):
    model = FAMILIES[family]()
    prefix, blocks = find_blocks(model)
    assert len(blocks) == 3
    names = trainable_parameter_names(model, [1])
    assert names and all(n.startswith(f"{prefix}.1.") for n in names)
    block_params = {n for n, _ in blocks[1].named_parameters()}
    assert {n[len(prefix) + 3 :] for n in names} == block_params
    attn = trainable_parameter_names(model, [1], modules="attn")
    mlp = trainable_parameter_names(model, [1], modules="mlp")
    assert attn and mlp and not set(attn) & set(mlp) and set(attn) | set(mlp) < set(names)
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    embeddings = trainable_parameter_names(model, [], train_embeddings=True, train_lm_head=tied)
    assert len(embeddings) >= 1 and not any(n.startswith(prefix + ".") for n in embeddings)
    if tied:  # one tensor: training only one of the two would silently train both
        with pytest.raises(ValueError, match="ties its LM head to the input embeddings"):
            trainable_parameter_names(model, [], train_embeddings=True)
        with pytest.raises(ValueError, match="train_lm_head=True"):
            trainable_parameter_names(model, [], train_lm_head=True)


def _rows(tokenizer, n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompts = [
        torch.randint(5, 1000, (int(torch.randint(8, 20, (1,), generator=gen)),), generator=gen)
        for _ in range(n)
    ]
    responses = [
        torch.randint(5, 1000, (int(torch.randint(2, 7, (1,), generator=gen)),), generator=gen)
        for _ in range(n)
    ]
    old = [torch.full((len(r),), -3.0) for r in responses]
    return prompts, responses, old


def test_single_block_update_invariants(tiny_model, tokenizer):
    """layers=[k]: optimizer holds exactly block k, frozen tensors stay bit-identical over two
    updates, and no parameter below block k receives a gradient."""
    k = 2
    model = tiny_model
    prefix, blocks = find_blocks(model)
    names = trainable_parameter_names(model, parse_layers([k], len(blocks)))
    trainable = apply_layer_selection(model, names)
    optimizer = torch.optim.AdamW(param_groups(model, names, 1e-2), lr=1e-2)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in blocks[k].parameters()}

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reached_below = []
    for i in range(k):
        blocks[i].register_forward_hook(
            lambda mod, args, out: reached_below.append(
                out[0].requires_grad if isinstance(out, tuple) else out.requires_grad
            )
        )
    prompts, responses, old = _rows(tokenizer)
    reference = ReferenceWeights(trainable)
    for _ in range(2):
        ppo_update(
            HFPolicy(model, tokenizer),
            optimizer,
            trainable,
            single_step_batch(prompts, responses, old),
            np.linspace(-1, 1, len(prompts)),
            LossConfig(kl_coef=0.1),
            UpdateConfig(micro_batch_size=4),
            8,
            1.0,
            reference=reference,
        )
        for name, param in model.named_parameters():
            if not name.startswith(f"{prefix}.{k}."):
                assert param.grad is None, f"{name} received a gradient"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(n.startswith(f"{prefix}.{k}.") for n in changed)
    assert reached_below and not any(reached_below), "activations below block k required grad"
    # The reference weights are the initial ones and swapping them back is exact.
    with reference.swapped_in():
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert [n for n, p in model.named_parameters() if not torch.equal(p, before[n])] == changed


def test_lr_multipliers_make_param_groups(tiny_model):
    names = trainable_parameter_names(tiny_model, [1, 2])
    groups = param_groups(tiny_model, names, 1e-3, {2: 3.0})
    lrs = sorted(g["lr"] for g in groups)
    assert lrs == pytest.approx([1e-3, 3e-3])
    with pytest.raises(ValueError, match="block 9"):
        param_groups(tiny_model, names, 1e-3, {9: 2.0})
