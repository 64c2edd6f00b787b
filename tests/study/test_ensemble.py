"""The ensemble of single-block policies votes: checked against separate member models."""

from __future__ import annotations

import copy

import pytest
import torch

from lamina.agents.choose import ChoicePolicy
from lamina.agents.parsing import parse_action
from lamina.agents.policy import HFPolicy
from lamina.study.ensemble import EnsemblePolicy, majority_vote

ACTIONS = [
    ["go north", "go south", "look", "take key"],
    ["open door", "eat apple", "go west"],
    ["look", "wait"],
]
TASKS = ["find the key", "leave the room", "look around"]


def member(model, block: int, seed: int, scale: float = 3.0) -> dict[str, torch.Tensor]:
    """Block ``block``'s tensors moved by seeded noise: a stand-in for a trained single-block arm."""
    gen = torch.Generator().manual_seed(seed)
    prefix = f"model.layers.{block}."
    return {
        n: p.detach() + scale * torch.randn(p.shape, generator=gen) * p.detach().abs().mean()
        for n, p in model.named_parameters()
        if n.startswith(prefix)
    }


def with_member(model, tensors):
    copied = copy.deepcopy(model)
    params = dict(copied.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)
    return copied


@pytest.fixture
def setup(tiny_model, tokenizer):
    members = {"a": member(tiny_model, 1, 0), "b": member(tiny_model, 2, 1), "c": member(tiny_model, 3, 2)}
    base = ChoicePolicy(tiny_model, tokenizer)
    prompts = [base.encode([{"role": "user", "content": f"Task: {t}. Choose an action."}]) for t in TASKS]
    return members, prompts


def oracle_choice(model, tokenizer, tensors, prompts, temperature):
    policy = ChoicePolicy(with_member(model, tensors), tokenizer)
    return policy.choose(prompts, ACTIONS, temperature=temperature)


def test_majority_vote():
    assert majority_vote(["a", "b", "a"]) == 0
    assert majority_vote([None, "b", "a", "b"]) == 1
    assert majority_vote(["a", "b"]) == 0  # a tie goes to the better-ranked member
    assert majority_vote([None, None]) == 0


def test_choose_mode_majority_wins_and_the_model_is_restored(tiny_model, tokenizer, setup):
    members, prompts = setup
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    a = [c.index for c in oracle_choice(tiny_model, tokenizer, members["a"], prompts, 0.0)]
    b = [c.index for c in oracle_choice(tiny_model, tokenizer, members["b"], prompts, 0.0)]
    for order in (["a", "a", "b"], ["b", "a", "a"]):
        ensemble = EnsemblePolicy(tiny_model, tokenizer, [members[m] for m in order])
        got = [c.index for c in ensemble.act(prompts, ACTIONS, 0.0)]
        assert got == a  # two of three members choose as a does
    assert any(x != y for x, y in zip(a, b, strict=True)), "members a and b should disagree somewhere"
    for n, p in tiny_model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_choose_mode_averages_the_members_distributions(tiny_model, tokenizer, setup):
    members, prompts = setup
    ensemble = EnsemblePolicy(tiny_model, tokenizer, [members["a"], members["b"], members["c"]])
    got = ensemble.act(prompts, ACTIONS, 1.0)
    oracle = [oracle_choice(tiny_model, tokenizer, members[m], prompts, 1.0) for m in "abc"]
    for i, choice in enumerate(got):
        expected = torch.stack([o[i].probs for o in oracle]).mean(0)
        assert torch.allclose(choice.probs, expected, atol=1e-5)
        assert choice.action == ACTIONS[i][choice.index]
        assert float(choice.log_probs) == pytest.approx(float(torch.log(expected[choice.index])), abs=1e-4)


def test_two_disagreeing_members_break_the_tie_by_their_average_distribution(tiny_model, tokenizer, setup):
    members, prompts = setup
    ensemble = EnsemblePolicy(tiny_model, tokenizer, [members["a"], members["b"]])
    got = ensemble.act(prompts, ACTIONS, 0.0)
    hard = [oracle_choice(tiny_model, tokenizer, members[m], prompts, 0.0) for m in "ab"]
    soft = [oracle_choice(tiny_model, tokenizer, members[m], prompts, 1.0) for m in "ab"]
    for i, choice in enumerate(got):
        voted = {hard[0][i].index, hard[1][i].index}
        mean = (soft[0][i].probs + soft[1][i].probs) / 2
        assert choice.index == max(voted, key=lambda k: float(mean[k]))


def test_generate_mode_returns_the_majority_members_response(tiny_model, tokenizer, setup):
    members, prompts = setup
    order = [members["a"], members["b"], members["a"]]
    ensemble = EnsemblePolicy(tiny_model, tokenizer, order, mode="generate", max_new_tokens=4)
    got = ensemble.act(prompts, ACTIONS, 0.0)
    answers = [
        HFPolicy(with_member(tiny_model, m), tokenizer, max_new_tokens=4).generate(prompts, 0.0)
        for m in order
    ]
    for i, generation in enumerate(got):
        parsed = [parse_action(a[i].text, ACTIONS[i]) for a in answers]
        winner = majority_vote([p.action if p.valid else None for p in parsed])
        assert generation.text == answers[winner][i].text
    with pytest.raises(NotImplementedError, match="evaluation only"):
        ensemble.log_probs([], [], 1.0)
