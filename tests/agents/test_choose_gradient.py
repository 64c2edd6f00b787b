"""Choose mode follows its own policy gradient: grad log pi(a|s) through the candidate softmax."""

from __future__ import annotations

import pytest
import torch

from lamina.agents.choose import ChoicePolicy
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.trainer.layers import apply_layer_selection, trainable_parameter_names
from lamina.trainer.update import pack_rows, response_log_probs

ACTIONS = ["go north", "take the brass key from the table", "open door", "look", "inventory", "eat apple"]
T = 0.7


@pytest.fixture
def setup(tiny_model, tokenizer):
    names = trainable_parameter_names(tiny_model, [1, 2])
    trainable = apply_layer_selection(tiny_model, names)
    policy = ChoicePolicy(tiny_model, tokenizer, micro_batch_size=4)
    memory = EpisodeMemory(task="find the key")
    prompt = policy.encode(build_messages(PromptConfig(), memory, "A dusty hall.", ACTIONS, 0, 5))
    return policy, trainable, prompt, policy.continuation_ids(ACTIONS)


def _grad(params, value):
    grads = torch.autograd.grad(value, params, allow_unused=True)
    pairs = zip(grads, params, strict=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in pairs])


def explicit_scores(policy, prompt, conts, mode="sum"):
    """Oracle: each candidate scored by its own full-prompt forward, then an explicit softmax."""
    rows = pack_rows([torch.tensor(prompt)] * len(conts), [torch.tensor(c) for c in conts], 0)
    token_lps, _ = response_log_probs(policy.model, rows)
    sums = torch.stack([token_lps[k, : len(c)].sum() for k, c in enumerate(conts)])
    return sums if mode == "sum" else sums / torch.tensor([len(c) for c in conts], dtype=sums.dtype)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_update_log_prob_and_gradient_equal_explicit_softmax(setup, mode):
    policy, trainable, prompt, conts = setup
    policy.score_mode = mode
    chosen = 1
    log_pi, mask, _ = policy.log_probs(
        [torch.tensor(prompt)], [torch.tensor(conts[chosen])], T, candidates=[conts], chosen=[chosen]
    )
    assert log_pi.shape == mask.shape == (1, 1) and float(mask) == 1.0
    oracle = torch.log_softmax(explicit_scores(policy, prompt, conts, mode) / T, -1)[chosen]
    torch.testing.assert_close(log_pi[0, 0], oracle, atol=2e-4, rtol=0)
    ours, want = _grad(trainable, log_pi[0, 0]), _grad(trainable, oracle)
    assert float(want.norm()) > 1e-3
    cosine = float(ours @ want / (ours.norm() * want.norm()))
    assert cosine > 0.999 and abs(float(ours.norm() / want.norm()) - 1) < 1e-2


def test_constant_advantage_gives_zero_expected_gradient(setup):
    """E_a[A grad log pi(a|s)] = A grad sum_a pi(a|s) = 0; the old surrogate A grad s_a is not 0."""
    policy, trainable, prompt, conts = setup
    k = len(conts)
    log_pi, _, _ = policy.log_probs(
        [torch.tensor(prompt)] * k,
        [torch.tensor(c) for c in conts],
        T,
        candidates=[conts] * k,
        chosen=range(k),
    )
    pi = log_pi[:, 0].detach().exp()
    assert abs(float(pi.sum()) - 1) < 1e-5
    exact = _grad(trainable, (pi * log_pi[:, 0]).sum())
    scores = explicit_scores(policy, prompt, conts)
    biased = _grad(trainable, (pi * scores).sum())
    assert float(biased.norm()) > 1e-2
    assert float(exact.norm()) < 1e-3 * float(biased.norm())


def test_entropy_of_candidate_distribution(setup):
    policy, _, prompt, conts = setup
    with torch.no_grad():
        log_pi, _, entropy = policy.log_probs(
            [torch.tensor(prompt)],
            [torch.tensor(conts[0])],
            T,
            candidates=[conts],
            chosen=[0],
            with_entropy=True,
        )
        p = torch.softmax(explicit_scores(policy, prompt, conts) / T, -1)
    torch.testing.assert_close(entropy[0, 0], -(p * p.log()).sum(), atol=1e-4, rtol=0)


def test_rows_with_different_candidate_counts(setup):
    """Rows of one micro-batch with K = 6 and K = 2: padding slots get probability 0."""
    policy, _, prompt, conts = setup
    with torch.no_grad():
        log_pi, _, _ = policy.log_probs(
            [torch.tensor(prompt)] * 2,
            [torch.tensor(conts[0]), torch.tensor(conts[1])],
            T,
            candidates=[conts, conts[:2]],
            chosen=[0, 1],
        )
        two = torch.log_softmax(explicit_scores(policy, prompt, conts[:2]) / T, -1)
    torch.testing.assert_close(log_pi[1, 0], two[1], atol=2e-4, rtol=0)
