"""The ``choose`` action mode: the policy is the model's own likelihood over the admissible actions.

pi(a | s) is proportional to exp(log p(a | prompt) / T) (GLAM, Carta et al. 2023), so every action is
valid. A candidate's continuation is ``template.format(action=a)`` followed by EOS, and its score is
the sum of its token log-probs (temperature 1) given the prompt.

Scoring shares each prompt's KV cache across its candidates. One forward runs the (left-padded)
prompts; a second runs, per prompt row, all of its candidates packed one after another, with a 4D
attention mask in which every candidate token sees the prompt and the earlier tokens of its own
candidate only, and positions that restart after the prompt for each candidate. Each prompt is thus
encoded once, and its cache is neither copied nor repeated per candidate.

    policy = ChoicePolicy(model, tokenizer)
    choices = policy.choose([policy.encode(messages)], [["go north", "look"]], temperature=1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.policy import Generation, HFPolicy, left_pad

# Custom 4D masks are passed through unchanged by these attention implementations.
MASKABLE_ATTENTION = ("sdpa", "eager")


@dataclass
class Choice(Generation):
    """A chosen action: the ``Generation`` of its continuation plus the candidate distribution.

    ``response_ids``/``log_probs`` (R,) are the chosen continuation's tokens and their temperature-1
    log-probs; ``text`` is its template text. ``scores`` and ``probs`` (K,) are the candidates'
    summed log-probs and the sampling distribution softmax(scores / T); ``index`` is the chosen one.
    """

    action: str = ""
    index: int = 0
    scores: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    probs: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def candidate_distribution(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(scores / T) over (K,) scores; one-hot at the first maximum when ``T == 0``."""
    if temperature > 0:
        return torch.softmax(scores.double() / temperature, dim=-1).float()
    probs = torch.zeros_like(scores)
    probs[torch.argmax(scores)] = 1.0  # argmax returns the first maximal index
    return probs


def _packed_mask(prompt_mask: torch.Tensor, segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (B, 1, Q, P + Q) for candidates packed after a cached prompt.

    Args:
        prompt_mask: (B, P), 1 on real prompt tokens (left padding is 0).
        segments: (B, Q), the candidate index of each packed token, -1 on right padding.
    Returns:
        0 where a query may attend, the dtype's minimum elsewhere. A candidate token sees the real
        prompt tokens and the tokens of its own candidate up to itself; padding sees only itself.
    """
    q = segments.shape[1]
    causal = torch.ones((q, q), dtype=torch.bool, device=segments.device).tril()  # (Q, Q)
    same = (segments[:, :, None] == segments[:, None, :]) & causal  # (B, Q, Q)
    real = segments >= 0  # (B, Q)
    same = (same & real[:, :, None]) | torch.eye(q, dtype=torch.bool, device=segments.device)
    sees_prompt = prompt_mask.bool()[:, None, :] & real[:, :, None]  # (B, Q, P)
    allowed = torch.cat([sees_prompt, same], dim=-1)  # (B, Q, P + Q)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class ChoicePolicy:
    """Chooses among admissible actions by the model's likelihood of each one's continuation.

    Args:
        model: a causal LM whose attention accepts custom 4D masks (``sdpa`` or ``eager``).
        tokenizer: its tokenizer; ``eos_token_id`` ends every continuation.
        micro_batch_size: prompts per forward; the candidate forward of a micro-batch holds
            ``micro_batch_size x (sum of its candidates' tokens) x vocab`` logits.
        template: the continuation of an action; must contain ``{action}``. With the default,
            ``parse_action(text, admissible)`` maps the returned text back to the action.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        micro_batch_size: int = 16,
        template: str = "<action>{action}</action>",
    ):
        if "{action}" not in template:
            raise ValueError(f"template {template!r} must contain '{{action}}'")
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

    # HFPolicy.encode reads only ``self.tokenizer``: both policies build prompts the same way.
    encode = HFPolicy.encode

    def continuation_ids(self, actions: Sequence[str]) -> list[list[int]]:
        """Token ids of ``template.format(action=a)`` (no special tokens) followed by EOS, per action."""
        texts = [self.template.format(action=a) for a in actions]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(ids) + [self.tokenizer.eos_token_id] for ids in encoded]

    def log_prob_temperature(self, sampling_temperature: float) -> float:
        """Token log-probs are recorded at temperature 1 whatever T spreads the choice."""
        return 1.0

    def act(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]:
        """The rollout's entry point: ``choose`` over each prompt's admissible actions."""
        if any(actions is None for actions in admissible):
            raise ValueError(
                "agent.mode=choose needs admissible actions, but this environment's action space is open; "
                "use agent.mode=generate"
            )
        return self.choose(prompts, admissible, temperature)  # type: ignore[arg-type]

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
        token_log_probs = self.score(prompts, continuations)
        choices: list[Generation] = []
        for actions, conts, lps in zip(candidates, continuations, token_log_probs, strict=True):
            scores = torch.stack([lp.sum() for lp in lps])  # (K,)
            probs = candidate_distribution(scores, temperature)
            if temperature > 0:
                index = int(torch.multinomial(probs, 1, generator=generator))
            else:
                index = int(torch.argmax(probs))
            choices.append(
                Choice(
                    response_ids=torch.tensor(conts[index], dtype=torch.long),
                    log_probs=lps[index],
                    text=self.template.format(action=actions[index]),
                    action=actions[index],
                    index=index,
                    scores=scores,
                    probs=probs,
                )
            )
        return choices

    def score(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[torch.Tensor]]:
        """Temperature-1 token log-probs of every continuation given its prompt.

        Args:
            prompts: N prompt token lists.
            continuations: N lists of K_i non-empty continuation token lists.
        Returns:
            ``out[i][k]``: (R_ik,) float32 CPU log-probs of continuation k of prompt i.
        """
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
        results: list[list[torch.Tensor]] = [[] for _ in prompts]
        for start in range(0, len(order), self.micro_batch_size):
            chunk = order[start : start + self.micro_batch_size]
            batch = self._score_batch([prompts[i] for i in chunk], [continuations[i] for i in chunk])
            for i, lps in zip(chunk, batch, strict=True):
                results[i] = lps
        return results

    @torch.no_grad()
    def _score_batch(
        self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[torch.Tensor]]:
        device = self.model.device
        # 1. The prompts, left padded: their cache and the logits of their last position.
        prompt_ids, prompt_mask = left_pad(prompts, self.tokenizer.pad_token_id)  # (B, P)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        out = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        first_log_probs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
        del out

        # 2. Each row's candidates packed one after another, right padded to Q.
        b, q = len(prompts), max(sum(len(c) for c in conts) for conts in continuations)
        ids = torch.full((b, q), self.tokenizer.pad_token_id, dtype=torch.long)
        segments = torch.full((b, q), -1, dtype=torch.long)
        positions = torch.zeros((b, q), dtype=torch.long)
        starts: list[list[int]] = []
        for row, (prompt, conts) in enumerate(zip(prompts, continuations, strict=True)):
            offset, row_starts = 0, []
            for k, cont in enumerate(conts):
                if not cont:
                    raise ValueError(f"continuation {k} of a prompt is empty")
                n = len(cont)
                ids[row, offset : offset + n] = torch.as_tensor(cont, dtype=torch.long)
                segments[row, offset : offset + n] = k
                positions[row, offset : offset + n] = len(prompt) + torch.arange(n)
                row_starts.append(offset)
                offset += n
            starts.append(row_starts)
        ids, segments, positions = ids.to(device), segments.to(device), positions.to(device)
        mask = _packed_mask(prompt_mask, segments, self.model.dtype)  # (B, 1, Q, P + Q)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        ).logits  # (B, Q, V): packed position j predicts packed token j + 1 of the same candidate
        del cache

        # 3. Token log-probs: a candidate's first token from the prompt's last logits, the rest
        #    from the previous packed position (logsumexp + gather, no (B, Q, V) log-softmax copy).
        next_ids = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)  # (B, Q); the wrapped column is unused
        logits = logits.float()
        next_log_probs = (
            logits.gather(-1, next_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        ).cpu()  # (B, Q)
        first_log_probs = first_log_probs.cpu()
        results = []
        for row, conts in enumerate(continuations):
            row_lps = []
            for cont, start in zip(conts, starts[row], strict=True):
                first = first_log_probs[row, cont[0]].reshape(1)
                rest = next_log_probs[row, start : start + len(cont) - 1]
                row_lps.append(torch.cat([first, rest]))
            results.append(row_lps)
        return results
