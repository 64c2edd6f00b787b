"""Encoding a common prompt prefix once per cluster of rows gives the unshared forward's scores,
log-probs and gradients (to 1e-5 in fp32), and is planned only where it saves compute."""

from __future__ import annotations

import pytest
import torch

from lamina.agents.choose import ChoicePolicy, _pack, packed_scores
from lamina.agents.prefix import PrefixStore
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.agents.shared_prefix import MIN_SHARED_TOKENS, plan_prefixes
from lamina.trainer.layers import apply_layer_selection, trainable_parameter_names

T = 0.7


def _prompts(policy):
    """One task's states after three different first actions, and another task at its first step:
    rows 0-2 share the system text, task and first observation; row 3 only the system text."""
    rows, actions = [], []
    for task, steps in [
        ("find the golden key hidden in the old wooden chest", [("A hall.", "go north")]),
        ("find the golden key hidden in the old wooden chest", [("A hall.", "look")]),
        ("find the golden key hidden in the old wooden chest", [("A hall.", "open door")]),
        ("eat the apple", []),
    ]:
        memory = EpisodeMemory(task=task, steps=list(steps))
        acts = ["go north", "open door", "look"][: 2 + len(steps) % 2]
        rows.append(policy.encode(build_messages(PromptConfig(), memory, "A cellar.", acts, len(steps), 5)))
        actions.append(acts)
    return rows, [policy.continuation_ids(a) for a in actions]


def test_plan_clusters_a_task_and_keeps_a_token_of_each_row():
    head = list(range(100, 140))
    prompts = [head + [1, 2, 3], head + [1, 2], head + [7], list(range(10))]
    plan = plan_prefixes(prompts)
    assert plan is not None
    assert plan.cluster[:3] == [plan.cluster[0]] * 3
    assert plan.shared[:3] == [40, 40, 40] and plan.shared[3] == 0  # the short row is alone
    assert all(len(p) - s >= 1 for p, s in zip(prompts, plan.shared, strict=True))
    # One row that is a prefix of another keeps its last token of its own.
    plan = plan_prefixes([head, head + [5]])
    assert plan is not None and plan.shared == [39, 39]
    assert plan.worth_it([head, head + [5]])


def test_plan_splits_tasks_whose_common_part_is_only_the_system_text():
    system = list(range(200, 220))
    task_a, task_b = system + list(range(300, 380)), system + list(range(400, 480))
    prompts = [task_a + [1], task_a + [2], task_b + [3], task_b + [4]]
    plan = plan_prefixes(prompts)
    assert plan is not None and len(plan.heads) == 2  # two clusters of 100 tokens, not one of 20
    assert plan.shared == [100] * 4
    assert plan.cost(prompts) == (2 * 100 + 4 * 1, 4 * 101)


def test_no_plan_without_a_long_enough_common_prefix():
    assert plan_prefixes([[1, 2, 3], [1, 2, 4]]) is None
    short = list(range(MIN_SHARED_TOKENS - 1))
    assert plan_prefixes([short + [1], short + [2]]) is None
    assert plan_prefixes([list(range(50))]) is None


def _lone_row_prompts(policy):
    """Three rows with a 40-token common head and a row that shares nothing (its prefix part of
    the shared forward is all padding)."""
    head = list(range(1000, 1040))
    prompts = [head + [5, 6, 7], head + [8], head + [9, 10, 11, 12, 13], list(range(2000, 2030))]
    return prompts, [policy.continuation_ids(["look", "go north"])] * 4


@pytest.mark.parametrize("rows", [_prompts, _lone_row_prompts])
def test_shared_scores_and_gradients_equal_the_plain_forward(tiny_model, tokenizer, rows):
    policy = ChoicePolicy(tiny_model, tokenizer, score="mean")
    prompts, conts = rows(policy)
    plan = plan_prefixes(prompts)
    assert plan is not None and plan.worth_it(prompts)
    if rows is _lone_row_prompts:
        assert plan.shared == [40, 40, 40, 0]

    def run(share):
        tiny_model.zero_grad(set_to_none=True)
        scores = packed_scores(tiny_model, prompts, conts, tokenizer.pad_token_id, share_prefixes=share)
        values = scores.candidate_scores("mean")
        values[torch.isfinite(values)].sum().backward()
        grads = torch.cat([p.grad.flatten() for p in tiny_model.parameters() if p.grad is not None])
        return values.detach(), grads

    shared, plain = run(True), run(False)
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=1e-4)
    assert float(plain[1].norm()) > 0


def test_prefix_store_states_from_a_shared_forward_equal_the_plain_ones(tiny_model, tokenizer):
    apply_layer_selection(tiny_model, trainable_parameter_names(tiny_model, [2, 3]))
    policy = ChoicePolicy(tiny_model, tokenizer)
    prompts, conts = _prompts(policy)
    stores = {}
    for share in (True, False):
        stores[share] = PrefixStore(2)
        packed_scores(tiny_model, prompts, conts, tokenizer.pad_token_id, stores[share], share)
    assert stores[True].states.keys() == stores[False].states.keys()
    for i, (key, (prompt_h, packed_h)) in enumerate(stores[False].states.items()):
        torch.testing.assert_close(stores[True].states[key][0], prompt_h, atol=1e-5, rtol=1e-5)
        assert prompt_h.shape[0] == len(prompts[i])
        # Shared, a row's candidates are a trie; plain, one chain each: compare candidate by candidate.
        trie, chains = (_pack([prompts[i]], [conts[i]], 0, share).node_paths[0] for share in (True, False))
        for shared_path, plain_path in zip(trie, chains, strict=True):
            torch.testing.assert_close(
                stores[True].states[key][1][shared_path], packed_h[plain_path], atol=1e-5, rtol=1e-5
            )


def test_choices_and_update_log_probs_do_not_depend_on_sharing(tiny_model, tokenizer):
    policy = ChoicePolicy(tiny_model, tokenizer, score="mean")
    prompts, conts = _prompts(policy)
    actions = [["go north", "open door", "look"][: len(c)] for c in conts]
    out = {}
    for share in (True, False):
        policy.share_prefixes = share
        choices = policy.choose(prompts, actions, temperature=0.0)
        lp, _, _ = policy.log_probs(
            [torch.tensor(p) for p in prompts],
            [c.response_ids for c in choices],
            T,
            candidates=conts,
            chosen=[c.index for c in choices],
        )
        out[share] = ([c.index for c in choices], lp)
    assert out[True][0] == out[False][0]
    torch.testing.assert_close(out[True][1], out[False][1], atol=1e-5, rtol=1e-5)
