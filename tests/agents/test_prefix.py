"""The optimized paths (frozen-prefix forwards, one forward per distinct state) give the plain paths'
log-probs (to 1e-5 in fp32), gradients and updates."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lamina.agents.choose import ChoicePolicy
from lamina.agents.policy import HFPolicy
from lamina.agents.prefix import PrefixStore, prefix_start
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.algorithms.losses import LossConfig
from lamina.trainer.layers import ReferenceWeights, apply_layer_selection, trainable_parameter_names
from lamina.trainer.rollout import single_step_batch
from lamina.trainer.update import UpdateConfig, micro_batches, ppo_update

ACTIONS = [["go north", "open door", "look"], ["take key", "go south"], ["go north", "open door", "look"]]
T = 0.7


def _prompts(policy):
    out = []
    for i, actions in enumerate(ACTIONS):
        memory = EpisodeMemory(task="find the key" if i != 1 else "open the chest")
        out.append(policy.encode(build_messages(PromptConfig(), memory, "A hall.", actions, 0, 5)))
    return out  # rows 0 and 2 are the same state


def _select(model, blocks):
    names = trainable_parameter_names(model, blocks)
    return names, apply_layer_selection(model, names)


def _grads(params):
    return torch.cat([p.grad.flatten() for p in params])


def test_prefix_start_is_the_lowest_trainable_block(tiny_model):
    assert prefix_start(tiny_model, trainable_parameter_names(tiny_model, [2, 3])) == 2
    assert prefix_start(tiny_model, trainable_parameter_names(tiny_model, [0])) == 0
    with_embeddings = trainable_parameter_names(tiny_model, [2], train_embeddings=True, train_lm_head=True)
    assert prefix_start(tiny_model, with_embeddings) == 0  # the embedding sees every position
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=64))
    assert prefix_start(gpt2, trainable_parameter_names(gpt2, [2])) == 0  # adds position embeddings


@pytest.mark.parametrize("start", [1, 2, 3])
def test_choose_log_probs_and_gradients_from_the_prefix_equal_the_full_forward(tiny_model, tokenizer, start):
    _, trainable = _select(tiny_model, list(range(start, 4)))
    policy = ChoicePolicy(tiny_model, tokenizer)
    prompts = [torch.tensor(p) for p in _prompts(policy)]
    cands = [policy.continuation_ids(a) for a in ACTIONS]
    chosen, responses = [0, 1, 2], [torch.tensor(cands[i][c]) for i, c in enumerate([0, 1, 2])]

    def run(prefix):
        tiny_model.zero_grad(set_to_none=True)
        lp, _, ent = policy.log_probs(
            prompts, responses, T, candidates=cands, chosen=chosen, with_entropy=True, prefix=prefix
        )
        (lp.sum() + ent.sum()).backward()
        return lp.detach(), ent.detach(), _grads(trainable)

    plain = run(None)
    store = PrefixStore(start)
    fast = run(store)
    assert len(store.states) == 2  # rows 0 and 2 share a state
    again = run(store)  # from the stored states, as in later PPO epochs
    for got in (fast, again):
        for a, b in zip(plain, got, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert float(plain[2].norm()) > 0


def test_generate_log_probs_from_the_prefix_equal_the_full_forward(tiny_model, tokenizer):
    _, trainable = _select(tiny_model, [2, 3])
    policy = HFPolicy(tiny_model, tokenizer)
    prompts = [torch.tensor(p) for p in _prompts(policy)]
    responses = [torch.tensor(tokenizer("<action>look</action>")["input_ids"][:n]) for n in (3, 5, 4)]
    results = []
    for prefix in (None, PrefixStore(2)):
        tiny_model.zero_grad(set_to_none=True)
        lp, mask, _ = policy.log_probs(prompts, responses, 1.0, prefix=prefix)
        (lp * mask).sum().backward()
        results.append((lp.detach() * mask, _grads(trainable)))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_duplicate_states_are_scored_once_with_the_same_scores(tiny_model, tokenizer, monkeypatch):
    policy = ChoicePolicy(tiny_model, tokenizer, micro_batch_size=8)
    prompts = _prompts(policy)
    conts = [policy.continuation_ids(a) for a in ACTIONS]
    rows_seen = []
    import lamina.agents.choose as choose

    real = choose.packed_scores
    monkeypatch.setattr(
        choose, "packed_scores", lambda m, p, c, *a, **k: rows_seen.append(len(p)) or real(m, p, c, *a, **k)
    )
    together = policy.candidate_scores(prompts, conts)
    assert rows_seen == [2]
    alone = [policy.candidate_scores([p], [c])[0] for p, c in zip(prompts, conts, strict=True)]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_micro_batches_keep_a_state_together():
    batch = single_step_batch(
        [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([1, 2]), torch.tensor([4])],
        [torch.tensor([5])] * 4,
        [torch.zeros(1)] * 4,
        candidates=[[[5], [6]], [[5]], [[5], [6]], [[5]]],
        chosen=[0, 0, 1, 0],
    )
    assert micro_batches(batch, [0, 1, 2, 3], 2) == [[0, 2, 1], [3]]


def test_update_with_the_frozen_prefix_equals_the_plain_update(tiny_model, tokenizer):
    """Two PPO epochs with the KL reference: every forward starts at block 2 in one run, at the
    embeddings in the other; the trained tensors and the metrics agree."""
    policy = ChoicePolicy(tiny_model, tokenizer)
    prompts = _prompts(policy)
    cands = [policy.continuation_ids(a) for a in ACTIONS]
    choices = policy.choose(prompts, ACTIONS, T, generator=torch.Generator().manual_seed(0))
    batch = single_step_batch(
        [torch.tensor(p) for p in prompts],
        [c.response_ids for c in choices],
        old_log_probs=[c.log_probs for c in choices],
        candidates=cands,
        chosen=[c.index for c in choices],
    )
    results = []
    for frozen_prefix in (False, True):
        model = copy.deepcopy(tiny_model)
        names, trainable = _select(model, [2, 3])
        reference = ReferenceWeights(trainable)
        optimizer = torch.optim.AdamW(trainable, lr=1e-2)
        store = PrefixStore(prefix_start(model, names)) if frozen_prefix else None
        metrics = ppo_update(
            ChoicePolicy(model, tokenizer),
            optimizer,
            trainable,
            batch,
            np.array([1.0, -0.5, 0.25]),
            LossConfig(kl_coef=0.1),
            UpdateConfig(ppo_epochs=2, micro_batch_size=1),
            1,
            T,
            reference,
            torch.Generator().manual_seed(0),
            prefix=store,
        )
        results.append(([p.detach().clone() for p in trainable], metrics))
    (w_plain, m_plain), (w_fast, m_fast) = results
    for a, b in zip(w_plain, w_fast, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert m_plain.keys() == m_fast.keys()
    for key in m_plain:
        assert m_plain[key] == pytest.approx(m_fast[key], rel=1e-4, abs=1e-6), key
    initial = dict(tiny_model.named_parameters())
    names = trainable_parameter_names(tiny_model, [2, 3])
    assert any(not torch.allclose(w, initial[n]) for w, n in zip(w_plain, names, strict=True))
