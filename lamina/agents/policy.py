"""Policies: batched HF ``generate`` (CPU and single GPU). A vLLM policy would share ``generate``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteriaList,
    StopStringCriteria,
)

from lamina.agents.logprobs import PackedRows, autocast_context, decoder, pack_rows, response_log_probs
from lamina.agents.models import stop_token_ids
from lamina.agents.prefix import PrefixStore, block_range


class _Generates(Protocol):
    """``generate`` as the policy calls it: PreTrainedModel does not declare it (the causal LMs
    lamina loads mix it in), and without ``return_dict_in_generate`` it returns the token ids."""

    def generate(self, **kwargs: Any) -> torch.Tensor: ...


@dataclass
class Generation:
    """One sampled response: token ids (R,), their log-probs under the sampling policy (R,), text."""

    response_ids: torch.Tensor
    log_probs: torch.Tensor
    text: str


def encode_messages(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """Prompt token ids through the tokenizer's chat template, ending with the assistant turn
    (``encode`` of both ``HFPolicy`` and ``ChoicePolicy``)."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
        encoded = cast(dict[str, Any], encoded)["input_ids"]  # a dict or a BatchEncoding
    return list(encoded)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pads token lists into ``(ids, mask)``, both (B, P)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if len(seq):
            ids[i, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids, mask


class SampledLogProbs(LogitsProcessor):
    """Records log softmax(logits / T) of each sampled token while ``generate`` runs.

    It sees the logits after the (neutral) default processors and before the temperature warper,
    and keeps one step's (B, V) log-probs at a time: at step t it reads the token sampled at step
    t - 1 from ``input_ids``. ``finish(sequences)`` reads the last one. Memory is O(B x V), not the
    O(B x R x V) of ``output_logits=True``.
    """

    def __init__(self, temperature: float):
        self.scale = temperature if temperature > 0 else 1.0
        self.pending: torch.Tensor | None = None  # (B, V) log-probs of the last step
        self.picked: list[torch.Tensor] = []  # R x (B,)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])
        self.pending = torch.log_softmax(scores.float() / self.scale, dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.picked.append(self.pending.gather(-1, tokens[:, None]).squeeze(-1))
            self.pending = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, R) log-probs of the R generated tokens."""
        self._take(sequences[:, -1])
        return torch.stack(self.picked, dim=1)


def sampling_config(
    temperature: float, max_new_tokens: int, eos_ids: list[int], pad_id: int
) -> GenerationConfig:
    """A complete, explicit generation config: plain temperature sampling (greedy at T = 0) and
    nothing else, so the recorded log-probs are those of the distribution that was sampled."""
    sampling = temperature > 0
    return GenerationConfig(
        do_sample=sampling,
        temperature=temperature if sampling else 1.0,
        top_k=0,
        top_p=1.0,
        min_p=None,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
        num_beams=1,
        num_return_sequences=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        renormalize_logits=False,
    )


@contextlib.contextmanager
def _without_model_generation_defaults(model: PreTrainedModel):
    """generate() fills every unset key from ``model.generation_config`` (a checkpoint's repetition
    penalty, top-k, suppressed tokens...). A blank one for the call keeps sampling plain."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


class HFPolicy:
    """Samples responses with ``model.generate`` and records their log-probs.

    Sampling is plain temperature sampling (no top-k/top-p, no repetition penalty, whatever the
    model's own ``generation_config`` says), so the recorded log-probs, ``log_softmax(logits / T)``,
    are exactly those of the distribution that was sampled. A response keeps the EOS / end-of-turn
    token that ended it: its probability is part of the policy.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = 48,
        micro_batch_size: int = 16,
        stop_strings: Sequence[str] = ("</action>",),
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.micro_batch_size = micro_batch_size
        self.stop_ids = stop_token_ids(tokenizer)
        self.stop_strings = list(stop_strings)
        # Built once: StopStringCriteria scans the whole vocabulary when it is created.
        self.stopping = StoppingCriteriaList(
            [StopStringCriteria(tokenizer, self.stop_strings)] if stop_strings else []
        )

    @property
    def max_response_units(self) -> int:
        """Tokens per response at most (the constant of Dr. GRPO's loss)."""
        return self.max_new_tokens

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids through the model's chat template, ending with the assistant turn."""
        return encode_messages(self.tokenizer, messages)

    def act(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]:
        """One response per prompt; free text, so ``admissible`` is only checked by the parser."""
        return self.generate(prompts, temperature=temperature)

    def log_probs(
        self,
        prompts: Sequence[torch.Tensor],
        responses: Sequence[torch.Tensor],
        temperature: float,
        *,
        candidates=None,
        chosen=None,
        with_entropy: bool = False,
        prefix: PrefixStore | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The update's token log-probs of the responses at temperature T (differentiable);
        ``prefix`` starts the forward at the lowest trainable block.

        Returns:
            log-probs (B, R), response mask (B, R), entropy (B, R) or None; on the model's device.
        """
        rows = pack_rows(prompts, responses, self.tokenizer.pad_token_id)
        if prefix is None or prefix.start == 0:
            log_probs, entropy = response_log_probs(self.model, rows, temperature, with_entropy)
        else:
            embeds = self._prefix_states(prefix, rows, prompts, responses)
            with block_range(self.model, prefix.start):
                log_probs, entropy = response_log_probs(self.model, rows, temperature, with_entropy, embeds)
        return log_probs, rows.response_mask.to(log_probs.device), entropy

    @torch.no_grad()
    def _prefix_states(self, prefix: PrefixStore, rows: PackedRows, prompts, responses) -> torch.Tensor:
        """(B, P + R, H) states entering block ``prefix.start``, laid out as ``rows``; rows not in
        the store are computed once (blocks below the start) and stored."""
        device = next(self.model.parameters()).device
        p = rows.input_ids.shape[1] - rows.response_ids.shape[1]
        spans = [(p - len(x), p + len(y)) for x, y in zip(prompts, responses, strict=True)]
        keys = [(tuple(map(int, x)), tuple(map(int, y))) for x, y in zip(prompts, responses, strict=True)]
        missing = [i for i, key in enumerate(keys) if key not in prefix.states]
        if missing:
            with block_range(self.model, 0, prefix.start), autocast_context(self.model):
                hidden = decoder(self.model)(
                    input_ids=rows.input_ids[missing].to(device),
                    attention_mask=rows.attention_mask[missing].to(device),
                    position_ids=rows.position_ids[missing].to(device),
                    use_cache=False,
                ).last_hidden_state
            for j, i in enumerate(missing):
                prefix.states[keys[i]] = (hidden[j, spans[i][0] : spans[i][1]], None)
        first = prefix.states[keys[0]][0]
        out = first.new_zeros((len(keys), rows.input_ids.shape[1], first.shape[-1]))
        for i, key in enumerate(keys):
            out[i, spans[i][0] : spans[i][1]] = prefix.states[key][0]
        return out

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], temperature: float = 1.0) -> list[Generation]:
        """Samples one response per prompt (greedy when ``temperature == 0``), in micro-batches."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.micro_batch_size):
            chunk = order[start : start + self.micro_batch_size]
            for i, gen in zip(
                chunk, self._generate_batch([prompts[i] for i in chunk], temperature), strict=True
            ):
                results[i] = gen
        return cast(list[Generation], results)  # every slot filled: ``order`` covers all prompts

    def _generate_batch(self, prompts: Sequence[Sequence[int]], temperature: float) -> list[Generation]:
        pad_id = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        ids, mask = left_pad(prompts, pad_id)
        recorder = SampledLogProbs(temperature)
        with _without_model_generation_defaults(self.model), autocast_context(self.model):
            sequences = cast(_Generates, self.model).generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=sampling_config(temperature, self.max_new_tokens, self.stop_ids, pad_id),
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=self.stopping,
            )
        new_tokens = sequences[:, ids.shape[1] :].cpu()  # (B, R)
        log_probs = recorder.finish(sequences).cpu()  # (B, R)
        gens = []
        for row in range(new_tokens.shape[0]):
            length = self.response_length(new_tokens[row].tolist())
            response = new_tokens[row, :length]
            text = cast(str, self.tokenizer.decode(response, skip_special_tokens=True))  # one row: a str
            gens.append(Generation(response, log_probs[row, :length], text))
        return gens

    def response_length(self, tokens: list[int]) -> int:
        """How many of a row's generated tokens are its own: up to and including the first stop token
        or the token that completes a stop string; the rest is padding after the row finished.

        Padding cannot be told apart by id (the pad token may be EOS or an end-of-turn token), so
        the first stop decides."""
        stops = set(self.stop_ids)
        length = next((j + 1 for j, t in enumerate(tokens) if t in stops), len(tokens))
        if self.stop_strings:

            def has_stop(n: int) -> bool:
                text = self.tokenizer.decode(tokens[:n], skip_special_tokens=False)
                return any(s in text for s in self.stop_strings)

            if has_stop(length):  # containment grows with n: the first n is found by bisection
                lo, hi = 1, length
                while lo < hi:
                    mid = (lo + hi) // 2
                    lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
                length = lo
        return max(length, 1)
