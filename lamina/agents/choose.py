"""The ``choose`` action mode: the policy is the model's own likelihood over the admissible actions.

pi(a | s) = softmax_k(s_k / T) (GLAM, Carta et al. 2023), so every action is valid. A candidate's
continuation is ``template.format(action=a)`` followed by EOS; its score s_k is the sum of its token
log-probs given the prompt (``score="sum"``) or their mean (``score="mean"``, TWOSOME's
normalisation against the bias towards short actions).

Scoring shares each prompt's KV cache across its candidates. One forward runs the (left-padded)
prompts; a second runs, per prompt row, its candidates packed as a token trie: candidates that begin
alike (``<action>go to ...``) share the nodes of their common beginning, so each distinct
(prefix, token) is run once. A 4D attention mask lets every node see the prompt and its own
ancestors only, and its position is the prompt length plus its depth, so each node's state is the
one it has in its candidate's own sequence. Each prompt is thus encoded once, its cache is neither
copied nor repeated per candidate, and a prefix several prompts share (system text, task) is
encoded once for all of them where that saves compute (``shared_prefix``).

The update uses the same packed forward with gradients: log pi(a|s) = s_a/T - logsumexp_k(s_k/T),
whose gradient (1/T)(grad s_a - sum_k pi_k grad s_k) is the policy's own. The chosen continuation's
token log-probs alone would give A * grad s_a, which is biased (non-zero in expectation even when
the advantage is the same for every action).

    policy = ChoicePolicy(model, tokenizer)
    choices = policy.choose([policy.encode(messages)], [["go north", "look"]], temperature=1.0)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.logprobs import autocast_context, decoder, gather_log_probs
from lamina.agents.policy import Generation, encode_messages, left_pad
from lamina.agents.prefix import PrefixStore, block_range, pad_states
from lamina.agents.shared_prefix import plan_prefixes, shared_prompt_forward

# Custom 4D masks are passed through unchanged by these attention implementations.
MASKABLE_ATTENTION = ("sdpa", "eager")
SCORE_MODES = ("sum", "mean")


@dataclass
class Choice(Generation):
    """A chosen action: the ``Generation`` of its continuation plus the candidate distribution.

    ``response_ids`` (R,) is the chosen continuation, ``text`` its template text, and ``log_probs``
    (1,) the action's log-probability log pi(a|s) under the sampling distribution. ``scores`` and
    ``probs`` (K,) are the candidates' scores and softmax(scores / T); ``index`` is the chosen one;
    ``candidates`` holds the K continuations' token ids (the update re-scores them all).
    """

    action: str = ""
    index: int = 0
    scores: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    probs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    candidates: list[list[int]] = field(default_factory=list)


def candidate_distribution(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(scores / T) over (K,) scores; one-hot at the first maximum when ``T == 0``."""
    if temperature > 0:
        return torch.softmax(scores.double() / temperature, dim=-1).float()
    probs = torch.zeros_like(scores)
    probs[torch.argmax(scores)] = 1.0  # argmax returns the first maximal index
    return probs


def _packed_mask(prompt_mask: torch.Tensor, packing: _Packing, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (B, 1, Q, P + Q) for candidate tries packed after a cached prompt.

    Args:
        prompt_mask: (B, P), 1 on real prompt tokens (left padding is 0).
    Returns:
        0 where a query may attend, the dtype's minimum elsewhere. A trie node sees the real prompt
        tokens, its ancestors and itself; padding sees only itself.
    """
    sees_prompt = prompt_mask.bool()[:, None, :] & packing.real[:, :, None]  # (B, Q, P)
    allowed = torch.cat([sees_prompt, packing.ancestors], dim=-1)  # (B, Q, P + Q)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _compute_dtype(body: torch.nn.Module, device: torch.device) -> torch.dtype:
    """The dtype attention runs in: autocast's when it is on, else the model's."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(body.parameters()).dtype


@dataclass
class PackedScores:
    """Token log-probs of every candidate of B prompts, from one shared-cache forward.

    ``nodes`` (B, Q): log p(token of trie node j | prompt and j's ancestors), 0 on padding.
    ``paths`` (B, K_max, Q): 1 where node j lies on candidate k's path. ``lengths`` (B, K_max):
    tokens per candidate, 0 where a row has fewer. ``node_paths[b][k]``: candidate k's node indices.
    """

    nodes: torch.Tensor
    paths: torch.Tensor
    lengths: torch.Tensor
    node_paths: list[list[list[int]]]

    def candidate_scores(self, mode: str) -> torch.Tensor:
        """(B, K_max) scores (sum or mean of token log-probs); -inf where a row has no candidate k."""
        total = torch.einsum("bkq,bq->bk", self.paths.to(self.nodes.dtype), self.nodes)
        if mode == "mean":
            total = total / self.lengths.clamp(min=1).to(total.dtype)
        return total.masked_fill(self.lengths == 0, float("-inf"))

    def token_log_probs(self, row: int, k: int) -> torch.Tensor:
        """(R_k,) token log-probs of candidate k of row ``row``."""
        return self.nodes[row, self.node_paths[row][k]]


def state_key(prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> Hashable:
    """What a choose-mode forward depends on: the prompt and the candidates (not the chosen one)."""
    return (tuple(prompt), tuple(tuple(c) for c in continuations))


def distinct(keys: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """(first index of each distinct key, index into that list for every key)."""
    first: dict[Hashable, int] = {}
    unique: list[int] = []
    inverse = []
    for i, key in enumerate(keys):
        if key not in first:
            first[key] = len(unique)
            unique.append(i)
        inverse.append(first[key])
    return unique, inverse


@dataclass
class _Packing:
    """B rows' candidate tries, right padded to Q nodes.

    ``ids``, ``parents`` (packed index of the parent node, -1 at depth 0 and on padding),
    ``positions``, ``real``: (B, Q). ``ancestors`` (B, Q, Q): node i sees node j (an ancestor or
    itself; padding sees itself). ``paths`` (B, K_max, Q), ``lengths`` (B, K_max), ``node_paths``
    and ``counts`` (nodes per row) as in ``PackedScores``.
    """

    ids: torch.Tensor
    parents: torch.Tensor
    positions: torch.Tensor
    real: torch.Tensor
    ancestors: torch.Tensor
    paths: torch.Tensor
    lengths: torch.Tensor
    node_paths: list[list[list[int]]]
    counts: list[int]


def candidate_trie(
    conts: Sequence[Sequence[int]], share: bool = True
) -> tuple[list[int], list[int], list[list[int]]]:
    """(token, parent) of each node, children after parents, and each continuation's node path;
    without ``share`` every continuation keeps its own nodes (one chain each)."""
    tokens: list[int] = []
    parents: list[int] = []
    index: dict[tuple[int, ...], int] = {}
    paths = []
    for k, cont in enumerate(conts):
        if not cont:
            raise ValueError(f"continuation {k} of a prompt is empty")
        parent, path = -1, []
        for token in cont:
            key = (parent, token) if share else (k, parent, token)
            node = index.get(key)
            if node is None:
                node = index[key] = len(tokens)
                tokens.append(int(token))
                parents.append(parent)
            path.append(node)
            parent = node
        paths.append(path)
    return tokens, parents, paths


def _pack(
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    share: bool = True,
) -> _Packing:
    tries = [candidate_trie(conts, share) for conts in continuations]
    b, q = len(prompts), max(len(tokens) for tokens, _, _ in tries)
    k_max = max(len(conts) for conts in continuations)
    ids = torch.full((b, q), pad_id, dtype=torch.long)
    parents = torch.full((b, q), -1, dtype=torch.long)
    positions = torch.zeros((b, q), dtype=torch.long)
    ancestors = torch.eye(q, dtype=torch.bool).repeat(b, 1, 1)
    paths = torch.zeros((b, k_max, q), dtype=torch.bool)
    lengths = torch.zeros((b, k_max), dtype=torch.long)
    for row, (prompt, (tokens, row_parents, row_paths)) in enumerate(zip(prompts, tries, strict=True)):
        n = len(tokens)
        ids[row, :n] = torch.as_tensor(tokens, dtype=torch.long)
        parents[row, :n] = torch.as_tensor(row_parents, dtype=torch.long)
        depth = [0] * n
        for j, parent in enumerate(row_parents):  # parents come first, so their rows are complete
            if parent >= 0:
                depth[j] = depth[parent] + 1
                ancestors[row, j] |= ancestors[row, parent]
        positions[row, :n] = len(prompt) + torch.as_tensor(depth, dtype=torch.long)
        for k, path in enumerate(row_paths):
            paths[row, k, path] = True
            lengths[row, k] = len(path)
    real = torch.arange(q)[None, :] < torch.as_tensor([len(t) for t, _, _ in tries])[:, None]
    return _Packing(
        ids,
        parents,
        positions,
        real,
        ancestors,
        paths,
        lengths,
        [p for _, _, p in tries],
        [len(t) for t, _, _ in tries],
    )


def _to_device(packing: _Packing, device: torch.device) -> _Packing:
    for name in ("ids", "parents", "positions", "real", "ancestors", "paths", "lengths"):
        setattr(packing, name, getattr(packing, name).to(device))
    return packing


def _two_forwards(
    model, prompts, pad_id, packing, device, prompt_embeds=None, packed_embeds=None, share=False
):
    """The prompt forward (its cache) and the packed candidates' forward over that cache; each input
    is token ids or, when given, the hidden states entering the first block that runs (then
    (B, P, H), left padded like the prompts). With ``share``, a common prompt prefix runs once per
    cluster of rows that have it (``shared_prefix``), when that saves compute.

    Returns the prompt hidden states and their mask (both (B, P', ...); each row's last position
    is its last prompt token) and the packed hidden states (B, Q, H)."""
    body = decoder(model)
    plan = plan_prefixes(prompts) if share and prompt_embeds is None else None
    with autocast_context(model):
        if plan is not None:
            prompt_h, prompt_mask, cache = shared_prompt_forward(body, prompts, plan, pad_id, device)
        else:
            prompt_ids, prompt_mask = left_pad(prompts, pad_id)  # (B, P)
            prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
            out = body(
                input_ids=None if prompt_embeds is not None else prompt_ids,
                inputs_embeds=prompt_embeds,
                attention_mask=prompt_mask,
                position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
            )
            prompt_h, cache = out.last_hidden_state, out.past_key_values
        mask = _packed_mask(prompt_mask, packing, _compute_dtype(body, device))
        hidden = body(
            input_ids=None if packed_embeds is not None else packing.ids,
            inputs_embeds=packed_embeds,
            attention_mask=mask,
            position_ids=packing.positions,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state  # (B, Q, H): packed position j predicts packed token j + 1 of its candidate
    return prompt_h, prompt_mask, hidden


@torch.no_grad()
def _fill_prefix(model, store: PrefixStore, keys, prompts, continuations, pad_id, device, share) -> None:
    """Computes and stores the states entering block ``store.start`` for rows not in the store."""
    missing = [i for i, key in enumerate(keys) if key not in store.states]
    if not missing:
        return
    rows = [prompts[i] for i in missing]
    packing = _to_device(_pack(rows, [continuations[i] for i in missing], pad_id, share), device)
    with block_range(model, 0, store.start):
        prompt_h, prompt_mask, packed_h = _two_forwards(model, rows, pad_id, packing, device, share=share)
    for j, i in enumerate(missing):
        store.states[keys[i]] = (prompt_h[j, prompt_mask[j].bool()], packed_h[j, : packing.counts[j]])


def packed_scores(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    prefix: PrefixStore | None = None,
    share_prefixes: bool = True,
) -> PackedScores:
    """Runs the two shared-cache forwards (differentiable when autograd is on), on the model's device.

    With a ``prefix`` store whose ``start`` is k > 0, the forwards run blocks k..L-1 from the stored
    states entering block k (computing and storing any that are missing, without autograd).
    ``share_prefixes`` encodes a prompt prefix common to several rows once (token-id inputs only)
    and the common beginning of a row's candidates once (the trie); without it each candidate is
    packed whole (the plain path, kept to time against)."""
    device = next(model.parameters()).device
    # Each row's candidates packed one after another, right padded to Q.
    packing = _to_device(_pack(prompts, continuations, pad_id, share_prefixes), device)
    if prefix is not None and prefix.start > 0:
        keys = [state_key(p, c) for p, c in zip(prompts, continuations, strict=True)]
        _fill_prefix(model, prefix, keys, prompts, continuations, pad_id, device, share_prefixes)
        states = [prefix.states[key] for key in keys]
        prompt_embeds = pad_states([s[0] for s in states], max(len(p) for p in prompts), left=True)
        packed = cast("list[torch.Tensor]", [s[1] for s in states])  # choose-mode entries hold both
        packed_embeds = pad_states(packed, packing.ids.shape[1], left=False)
        with block_range(model, prefix.start):
            prompt_h, _, hidden = _two_forwards(
                model, prompts, pad_id, packing, device, prompt_embeds, packed_embeds
            )
    else:
        prompt_h, _, hidden = _two_forwards(model, prompts, pad_id, packing, device, share=share_prefixes)
    with autocast_context(model):
        # A node's token is predicted by its parent's state, a depth-0 node's by the prompt's last
        # (chunked head: no (B, Q, V) log-softmax copy).
        sources = torch.cat([prompt_h[:, -1:], hidden], dim=1)  # (B, 1 + Q, H)
        index = (packing.parents + 1)[:, :, None].expand(-1, -1, sources.shape[-1])
        nodes, _ = gather_log_probs(model, sources.gather(1, index), packing.ids)  # (B, Q)
    nodes = torch.where(packing.real, nodes, torch.zeros_like(nodes))
    return PackedScores(nodes, packing.paths, packing.lengths, packing.node_paths)


class ChoicePolicy:
    """Chooses among admissible actions by the model's likelihood of each one's continuation.

    Args:
        model: a causal LM whose attention accepts custom 4D masks (``sdpa`` or ``eager``).
        tokenizer: its tokenizer; ``eos_token_id`` ends every continuation.
        micro_batch_size: prompts per forward; the candidate forward of a micro-batch holds
            ``micro_batch_size x (sum of its candidates' tokens)`` positions.
        template: the continuation of an action; must contain ``{action}``. With the default,
            ``parse_action(text, admissible)`` maps the returned text back to the action.
        score: ``sum`` or ``mean`` of a continuation's token log-probs.
    """

    max_response_units = 1  # the update's unit is the action: one log-prob per row

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        micro_batch_size: int = 16,
        template: str = "<action>{action}</action>",
        score: str = "sum",
    ):
        if "{action}" not in template:
            raise ValueError(f"template {template!r} must contain '{{action}}'")
        if score not in SCORE_MODES:
            raise ValueError(f"agent.choose_score={score!r}; valid: {', '.join(SCORE_MODES)}")
        attention = getattr(model.config, "_attn_implementation", None)
        if attention not in MASKABLE_ATTENTION:
            raise ValueError(
                f"choose mode needs attn_implementation in {MASKABLE_ATTENTION} (custom 4D masks), "
                f"the model uses {attention!r}"
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("choose mode needs a tokenizer with an EOS token to end each action")
        self.model = model
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.template = template
        self.score_mode = score
        # Set by the trainer during a training rollout: scoring then keeps the frozen-prefix states.
        self.prefix_store: PrefixStore | None = None
        # One forward per distinct (prompt, candidates) state, a prompt prefix common to several
        # distinct states encoded once, and a row's candidates packed as a trie; off only to time
        # the plain paths.
        self.share_states = True
        self.share_prefixes = True

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids, as ``HFPolicy.encode`` builds them: both policies build prompts the same way."""
        return encode_messages(self.tokenizer, messages)

    def continuation_ids(self, actions: Sequence[str]) -> list[list[int]]:
        """Token ids of ``template.format(action=a)`` (no special tokens) followed by EOS, per action."""
        texts = [self.template.format(action=a) for a in actions]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(ids) + [self.tokenizer.eos_token_id] for ids in encoded]

    def act(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]:
        """The rollout's entry point: ``choose`` over each prompt's admissible actions."""
        if any(actions is None for actions in admissible):
            raise ValueError(
                "agent.mode=choose needs admissible actions, but this environment's action space is open; "
                "use agent.mode=generate"
            )
        return self.choose(prompts, cast("Sequence[Sequence[str]]", admissible), temperature)  # no None

    @torch.no_grad()
    def choose(
        self,
        prompts: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[str]],
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[Generation]:
        """Samples one action per prompt from softmax(score / T) over its candidates.

        Args:
            prompts: N prompt token lists (each non-empty).
            candidates: N non-empty lists of admissible actions.
            temperature: T; 0 takes the highest score (the first one on ties).
            generator: the CPU generator to sample with (the global one when None).
        Returns:
            N ``Choice`` objects (``Generation`` subclasses), in the order of ``prompts``.
        """
        if len(prompts) != len(candidates):
            raise ValueError(f"got {len(prompts)} prompts but {len(candidates)} candidate lists")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        for i, (prompt, actions) in enumerate(zip(prompts, candidates, strict=True)):
            if not actions:
                raise ValueError(
                    f"prompt {i} has an empty candidate list: choose mode needs admissible actions"
                )
            if not prompt:
                raise ValueError(f"prompt {i} is empty")
        continuations = [self.continuation_ids(actions) for actions in candidates]
        all_scores = self.candidate_scores(prompts, continuations)
        choices: list[Generation] = []
        for actions, conts, scores in zip(candidates, continuations, all_scores, strict=True):
            probs = candidate_distribution(scores, temperature)
            if temperature > 0:
                index = int(torch.multinomial(probs, 1, generator=generator))
            else:
                index = int(torch.argmax(probs))
            choices.append(
                Choice(
                    response_ids=torch.tensor(conts[index], dtype=torch.long),
                    log_probs=torch.log(probs[index].double()).float().reshape(1),
                    text=self.template.format(action=actions[index]),
                    action=actions[index],
                    index=index,
                    scores=scores,
                    probs=probs,
                    candidates=conts,
                )
            )
        return choices

    def _micro_batches(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        # In token order a task's rows sit together (their prefix is shared); otherwise by length
        # (less padding per batch).
        order = sorted(
            range(len(prompts)),
            key=(lambda i: list(prompts[i])) if self.share_prefixes else (lambda i: len(prompts[i])),
        )
        return [order[s : s + self.micro_batch_size] for s in range(0, len(order), self.micro_batch_size)]

    def _distinct(self, prompts, continuations) -> tuple[list[int], list[int]]:
        if not self.share_states:
            return list(range(len(prompts))), list(range(len(prompts)))
        return distinct([state_key(p, c) for p, c in zip(prompts, continuations, strict=True)])

    def _score_distinct(
        self, prompts, continuations
    ) -> tuple[list[int], list[tuple[list[int], PackedScores]]]:
        """Scores each distinct state once (a group's copies share their first prompts), in
        micro-batches. Returns each row's index among the distinct states and, per micro-batch,
        (distinct-state indices, their ``PackedScores``)."""
        unique, inverse = self._distinct(prompts, continuations)
        u_prompts = [prompts[i] for i in unique]
        u_conts = [continuations[i] for i in unique]
        batches = []
        for chunk in self._micro_batches(u_prompts):
            chunk_prompts, chunk_conts = [u_prompts[i] for i in chunk], [u_conts[i] for i in chunk]
            batches.append(
                (
                    chunk,
                    packed_scores(
                        self.model,
                        chunk_prompts,
                        chunk_conts,
                        self._pad_id,
                        self.prefix_store,
                        self.share_prefixes,
                    ),
                )
            )
        return inverse, batches

    @torch.no_grad()
    def candidate_scores(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]]
    ) -> list[torch.Tensor]:
        """Each prompt's (K_i,) float32 CPU candidate scores (``score`` mode), in micro-batches; each
        distinct (prompt, candidates) state is scored once."""
        inverse, batches = self._score_distinct(prompts, continuations)
        scored: dict[int, torch.Tensor] = {}
        for chunk, packed in batches:
            scores = packed.candidate_scores(self.score_mode).float().cpu()
            for j, u in enumerate(chunk):
                scored[u] = scores[j, : int((packed.lengths[j] > 0).sum())]
        return [scored[u] for u in inverse]

    @torch.no_grad()
    def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[torch.Tensor]]:
        """Temperature-1 token log-probs of every continuation given its prompt.

        Returns:
            ``out[i][k]``: (R_ik,) float32 CPU log-probs of continuation k of prompt i.
        """
        inverse, batches = self._score_distinct(prompts, continuations)
        scored: dict[int, list[torch.Tensor]] = {}
        for chunk, packed in batches:
            for j, u in enumerate(chunk):
                k_count = int((packed.lengths[j] > 0).sum())
                scored[u] = [packed.token_log_probs(j, k).float().cpu() for k in range(k_count)]
        return [scored[u] for u in inverse]

    def log_probs(
        self,
        prompts: Sequence[torch.Tensor],
        responses: Sequence[torch.Tensor],
        temperature: float,
        *,
        candidates: Sequence[Sequence[Sequence[int]]] | None = None,
        chosen: Sequence[int] | None = None,
        with_entropy: bool = False,
        prefix: PrefixStore | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The update's log pi(a|s) = s_a/T - logsumexp_k(s_k/T) of the chosen actions, re-scoring
        every candidate with the packed forward (differentiable when autograd is on). Rows in the
        same state share one forward; ``prefix`` starts it at the lowest trainable block.

        Returns:
            log-probs (B, 1), mask (B, 1), and the candidate distribution's entropy (B, 1) or None.
        """
        if candidates is None or chosen is None:
            raise ValueError("choose-mode rows need their candidates and chosen indices")
        if temperature <= 0:
            raise ValueError(f"the update needs a sampling temperature > 0, got {temperature}")
        rows = [list(map(int, p)) for p in prompts]
        unique, inverse = self._distinct(rows, candidates)
        packed = packed_scores(
            self.model,
            [rows[i] for i in unique],
            [candidates[i] for i in unique],
            self._pad_id,
            prefix,
            self.share_prefixes,
        )
        logits = packed.candidate_scores(self.score_mode).float() / temperature  # (U, K_max)
        log_pi = torch.log_softmax(logits, dim=-1)[inverse]  # (B, K_max); -inf slots get probability 0
        index = torch.as_tensor(list(chosen), dtype=torch.long, device=logits.device)
        picked = log_pi.gather(-1, index[:, None])  # (B, 1)
        entropy = None
        if with_entropy:
            p = log_pi.exp()
            entropy = -(p * torch.where(p > 0, log_pi, torch.zeros_like(log_pi))).sum(-1, keepdim=True)
        return picked, torch.ones_like(picked), entropy

    @property
    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id
