"""Encoding a common prompt prefix once for the rows that share it.

A group's copies of a task are prompted with the same system text and task, and, for the first
steps, the same early history; different tasks still share the system text. Before the prompt
forward, rows are clustered by common token prefix: each cluster's prefix runs once, its KV cache is
gathered out to the cluster's rows, and each row's remaining tokens run over it. A row's sequence is
then ``[pads][cluster prefix][pads][own tokens]``, with the padding masked and positions counted
over real tokens only, so every token sees exactly what it sees in the unshared forward.

Sharing is planned per micro-batch, and a plan exists only when the padded token count it runs is
clearly below the unshared one (``PrefixPlan.worth_it``): with one shared system text and long,
varied tails it would only add a forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lamina.agents.policy import left_pad

# A prefix shorter than this is not worth a separate forward.
MIN_SHARED_TOKENS = 16
# Share only when it runs at most this fraction of the unshared forward's padded tokens.
MAX_COST_RATIO = 0.9


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class PrefixPlan:
    """Per row, its cluster and the length of the prefix it takes from that cluster (0: none)."""

    cluster: list[int]
    shared: list[int]
    heads: list[list[int]]  # each cluster's prefix tokens

    def cost(self, prompts: Sequence[Sequence[int]]) -> tuple[int, int]:
        """(padded tokens run with sharing, without sharing)."""
        tails = max(len(p) - s for p, s in zip(prompts, self.shared, strict=True))
        heads = len(self.heads) * max(len(h) for h in self.heads)
        return heads + len(prompts) * tails, len(prompts) * max(len(p) for p in prompts)

    def worth_it(self, prompts: Sequence[Sequence[int]]) -> bool:
        shared, plain = self.cost(prompts)
        return shared <= MAX_COST_RATIO * plain


def plan_prefixes(prompts: Sequence[Sequence[int]], min_tokens: int = MIN_SHARED_TOKENS) -> PrefixPlan | None:
    """Clusters rows by common prefix so as to skip the most prompt tokens.

    In token order the rows that share a prefix are contiguous, and a run of rows i..j shares the
    smallest common prefix of its neighbours (at most each row's length - 1: every row keeps its
    last token). Splitting the sorted rows into runs that maximise the tokens skipped,
    sum (n_c - 1) * p_c, is a small dynamic programme (B <= a micro-batch). Runs shorter than
    ``min_tokens`` or of one row are not shared. Returns None when nothing is shared or sharing
    would not save padded compute (``PrefixPlan.worth_it``)."""
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    n = len(order)
    own = [len(prompts[i]) - 1 for i in order]
    adjacent = [_common_length(prompts[order[k - 1]], prompts[order[k]]) for k in range(1, n)]
    best = [0] * (n + 1)  # best[j]: most tokens skipped by the first j sorted rows
    cut = [0] * (n + 1)  # where the last run of that best split starts
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], j - 1  # row j - 1 alone
        common = own[j - 1]
        for i in range(j - 2, -1, -1):  # the run of rows i .. j - 1
            common = min(common, own[i], adjacent[i])
            if common < min_tokens:
                break  # longer runs only share less
            if best[i] + (j - 1 - i) * common > best[j]:
                best[j], cut[j] = best[i] + (j - 1 - i) * common, i
    cluster, shared = [0] * n, [0] * n
    heads: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        if j - i > 1:
            length = min(min(own[i:j]), min(adjacent[i : j - 1]))
            for k in order[i:j]:
                cluster[k], shared[k] = len(heads), length
            heads.append(list(prompts[order[i]][:length]))
        j = i
    if not heads:
        return None
    plan = PrefixPlan(cluster, shared, heads)
    return plan if plan.worth_it(prompts) else None


def shared_prompt_forward(body, prompts: Sequence[Sequence[int]], plan: PrefixPlan, pad_id: int, device):
    """The prompt forward of ``body`` (a decoder without its head) through a ``PrefixPlan``.

    Returns the hidden states (B, P', H), the attention mask (B, P') they were computed under (its
    ones are each row's prompt tokens in order) and the KV cache, as the unshared forward does with
    its left-padded (B, P) prompts."""
    head_ids, head_mask = left_pad(plan.heads, pad_id)
    head_ids, head_mask = head_ids.to(device), head_mask.to(device)
    head = body(
        input_ids=head_ids,
        attention_mask=head_mask,
        position_ids=(head_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    rows = torch.as_tensor(plan.cluster, dtype=torch.long, device=device)
    takes = torch.as_tensor([s > 0 for s in plan.shared], dtype=head_mask.dtype, device=device)
    cache = head.past_key_values
    cache.reorder_cache(rows)  # (C, ...) -> (B, ...): each row reads its cluster's prefix
    row_head_mask = head_mask[rows] * takes[:, None]  # rows without a cluster see no prefix
    tail_ids, tail_mask = left_pad([p[s:] for p, s in zip(prompts, plan.shared, strict=True)], pad_id)
    mask = torch.cat([row_head_mask, tail_mask.to(device)], dim=1)
    width = head_ids.shape[1]
    tail = body(
        input_ids=tail_ids.to(device),
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, width:],
        past_key_values=cache,
        use_cache=True,
    )
    hidden = torch.cat([head.last_hidden_state[rows], tail.last_hidden_state], dim=1)
    return hidden, mask, tail.past_key_values
