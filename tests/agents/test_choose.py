"""``ChoicePolicy``: shared-cache candidate scores equal the training forward's, and sampling behaves."""

from __future__ import annotations

import pytest
import torch

from lamina.agents.choose import Choice, ChoicePolicy, _pack, candidate_distribution
from lamina.agents.parsing import parse_action
from lamina.agents.prompt import EpisodeMemory, PromptConfig, build_messages
from lamina.trainer.update import pack_rows, response_log_probs

CANDIDATES = [
    ["look", "go to desk 1", "take the red apple from countertop 2", "open drawer 3"],
    ["inventory", "examine the mysterious sealed wooden box on the shelf"],
    ["go north", "go south", "put mug 1 in/on coffeemachine 1"],
]


@pytest.fixture(scope="module")
def policy(tiny_model_and_tokenizer):
    model, tokenizer = tiny_model_and_tokenizer
    return ChoicePolicy(model, tokenizer, micro_batch_size=2)


@pytest.fixture(scope="module")
def prompts(policy):
    cfg = PromptConfig()
    out = [
        policy.encode(
            build_messages(cfg, EpisodeMemory(task="find the key " * (3 * i + 1)), "A room.", c, 0, 5)
        )
        for i, c in enumerate(CANDIDATES)
    ]
    assert len({len(p) for p in out}) == len(out)  # different lengths exercise left padding
    return out


def naive_log_probs(policy, prompt, continuations):
    """Oracle: each candidate scored with its own full prompt by the training forward."""
    rows = pack_rows(
        [torch.tensor(prompt)] * len(continuations),
        [torch.tensor(c) for c in continuations],
        policy.tokenizer.pad_token_id,
    )
    log_probs, _ = response_log_probs(policy.model, rows, temperature=1.0)
    return [log_probs[k, : len(c)] for k, c in enumerate(continuations)]


@torch.no_grad()
def test_chosen_continuation_and_action_log_prob(policy, prompts):
    choices = policy.choose(prompts, CANDIDATES, temperature=0.7, generator=torch.Generator().manual_seed(0))
    rows = pack_rows(
        [torch.tensor(p) for p in prompts], [c.response_ids for c in choices], policy.tokenizer.pad_token_id
    )
    log_probs, _ = response_log_probs(policy.model, rows, temperature=1.0)
    for i, c in enumerate(choices):
        assert isinstance(c, Choice) and c.response_ids[-1] == policy.tokenizer.eos_token_id
        assert c.candidates[c.index] == c.response_ids.tolist()
        # The score of the chosen candidate is its continuation's summed token log-probs...
        torch.testing.assert_close(
            log_probs[i, : len(c.response_ids)].sum(), c.scores[c.index], atol=5e-4, rtol=0
        )
        # ...and the recorded log-prob is the action's, log softmax(scores / T)[a].
        assert c.log_probs.shape == (1,)
        torch.testing.assert_close(
            c.log_probs[0], torch.log_softmax(c.scores / 0.7, -1)[c.index], atol=1e-5, rtol=0
        )


@torch.no_grad()
def test_every_candidate_scored_like_naive_oracle(policy, prompts):
    continuations = [policy.continuation_ids(c) for c in CANDIDATES]
    assert len({len(c) for conts in continuations for c in conts}) > 2  # candidates of different lengths
    shared = policy.score(prompts, continuations)
    for prompt, conts, lps in zip(prompts, continuations, shared, strict=True):
        for got, want in zip(lps, naive_log_probs(policy, prompt, conts), strict=True):
            torch.testing.assert_close(got, want, atol=2e-4, rtol=0)


def test_distribution_sums_to_one_and_greedy_takes_argmax(policy, prompts):
    for temperature in (0.5, 1.0, 3.0):
        for c in policy.choose(prompts, CANDIDATES, temperature=temperature):
            assert c.probs.shape == c.scores.shape
            assert abs(float(c.probs.sum()) - 1.0) < 1e-5
            torch.testing.assert_close(c.probs, torch.softmax(c.scores / temperature, -1), atol=1e-6, rtol=0)
    for c, actions in zip(policy.choose(prompts, CANDIDATES, temperature=0.0), CANDIDATES, strict=True):
        assert c.index == int(torch.argmax(c.scores)) and c.action == actions[c.index]
        assert float(c.probs[c.index]) == 1.0


def test_greedy_ties_take_the_first(policy, prompts):
    # Identical candidates score alike only up to float noise: batched CPU kernels are not bit-equal
    # across rows (-86.052337646 in slot 0, -86.052345276 in slot 1 on one machine).
    (choice,) = policy.choose([prompts[0]], [["look", "look", "go to desk 1"]], temperature=0.0)
    torch.testing.assert_close(choice.scores[0], choice.scores[1], atol=1e-4, rtol=0)
    assert choice.index in (0, 1, 2)
    if choice.index in (0, 1):
        assert choice.scores[choice.index] >= choice.scores[2]
    # Exact ties (the same tensor) go to the first index.
    assert int(candidate_distribution(torch.tensor([1.0, 3.0, 3.0]), 0.0).argmax()) == 1


def test_same_seed_same_choices_and_valid_actions(policy, prompts):
    # Equal token lengths: the random model scores them alike, so sampling really varies.
    compass = [["go north", "go south", "go east", "go west"]] * len(prompts)

    def run(seed, micro_batch_size=2):
        policy.micro_batch_size = micro_batch_size
        try:
            gen = torch.Generator().manual_seed(seed)
            return [c.index for c in policy.choose(prompts * 2, compass * 2, generator=gen)]
        finally:
            policy.micro_batch_size = 2

    assert run(1) == run(1) == run(1, micro_batch_size=16)  # sampling order does not depend on batching
    assert len({tuple(run(seed)) for seed in range(3)}) > 1
    for c, actions in zip(policy.choose(prompts, CANDIDATES), CANDIDATES, strict=True):
        parsed = parse_action(c.text, actions)
        assert parsed.valid and parsed.action == c.action


def test_single_candidate_always_chosen(policy, prompts):
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        (c,) = policy.choose([prompts[1]], [["open drawer 3"]], temperature=1.0, generator=gen)
        assert c.index == 0 and float(c.probs[0]) == 1.0 and parse_action(c.text, ["open drawer 3"]).valid


def test_bad_inputs_raise(policy, prompts):
    with pytest.raises(ValueError, match="empty candidate list"):
        policy.choose(prompts[:2], [["look"], []])
    with pytest.raises(ValueError, match="prompts"):
        policy.choose(prompts[:2], [["look"]])
    with pytest.raises(ValueError, match="template"):
        ChoicePolicy(policy.model, policy.tokenizer, template="<action></action>")


@torch.no_grad()
def test_eager_attention_scores_like_sdpa(policy, prompts, tiny_model):
    tiny_model.set_attn_implementation("eager")
    eager = ChoicePolicy(tiny_model, policy.tokenizer, micro_batch_size=3)
    continuations = [policy.continuation_ids(c) for c in CANDIDATES]
    for got, want in zip(
        eager.score(prompts, continuations), policy.score(prompts, continuations), strict=True
    ):
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=2e-4, rtol=0)


@torch.no_grad()
def test_candidates_that_begin_alike_share_trie_nodes_and_keep_their_scores(policy, prompts):
    # "go" is a prefix of "go north"'s text, two candidates are identical, "go to shelf 1/2" differ
    # in their last character only: each (prefix, token) is run once, every score stays exact.
    actions = ["go", "go north", "go north", "go to shelf 1", "go to shelf 2", "look"]
    conts = policy.continuation_ids(actions)
    packing = _pack([prompts[0]], [conts], policy.tokenizer.pad_token_id)
    prefixes = {tuple(c[:d]) for c in conts for d in range(1, len(c) + 1)}
    assert packing.counts == [len(prefixes)] < [sum(map(len, conts)) - 8]
    for k, path in enumerate(packing.node_paths[0]):
        assert packing.ids[0, path].tolist() == conts[k]
        # a node sees exactly the nodes on its own path up to itself
        assert packing.ancestors[0, path[-1]].nonzero().flatten().tolist() == sorted(path)
    got = policy.score([prompts[0]], [conts])[0]
    for have, want in zip(got, naive_log_probs(policy, prompts[0], conts), strict=True):
        torch.testing.assert_close(have, want, atol=2e-4, rtol=0)
    torch.testing.assert_close(got[1], got[2], atol=0, rtol=0)


def test_without_sharing_every_candidate_keeps_its_own_nodes(policy, prompts):
    conts = policy.continuation_ids(["go north", "go south"])
    plain = _pack([prompts[0]], [conts], policy.tokenizer.pad_token_id, share=False)
    assert plain.counts == [sum(map(len, conts))]
