"""Policies: batched HF ``generate`` (CPU and single GPU). A vLLM policy would share ``generate``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteriaList, StopStringCriteria

from lamina.agents.models import stop_token_ids


@dataclass
class Generation:
    """One sampled response: token ids (R,), their log-probs under the sampling policy (R,), text."""

    response_ids: torch.Tensor
    log_probs: torch.Tensor
    text: str


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


class HFPolicy:
    """Samples responses with ``model.generate`` and records their log-probs.

    Sampling is plain temperature sampling (no top-k/top-p), so the recorded log-probs,
    ``log_softmax(logits / T)``, are exactly those of the distribution that was sampled.
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
        # Built once: StopStringCriteria scans the whole vocabulary when it is created.
        self.stopping = StoppingCriteriaList(
            [StopStringCriteria(tokenizer, list(stop_strings))] if stop_strings else []
        )

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids through the model's chat template, ending with the assistant turn."""
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
            encoded = encoded["input_ids"]
        return list(encoded)

    def log_prob_temperature(self, sampling_temperature: float) -> float:
        """The temperature its recorded log-probs use, so the update recomputes them alike."""
        return sampling_temperature

    def act(
        self, prompts: Sequence[Sequence[int]], admissible: Sequence[Sequence[str] | None], temperature: float
    ) -> list[Generation]:
        """One response per prompt; free text, so ``admissible`` is only checked by the parser."""
        return self.generate(prompts, temperature=temperature)

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
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: Sequence[Sequence[int]], temperature: float) -> list[Generation]:
        pad_id = self.tokenizer.pad_token_id
        ids, mask = left_pad(prompts, pad_id)
        ids, mask = ids.to(self.model.device), mask.to(self.model.device)
        sampling = temperature > 0
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_k=0 if sampling else None,
            top_p=1.0 if sampling else None,
            eos_token_id=self.stop_ids,
            pad_token_id=pad_id,
            stopping_criteria=self.stopping,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new_tokens = out.sequences[:, ids.shape[1] :]  # (B, R)
        logits = torch.stack(out.logits, dim=1).float()  # (B, R, V)
        scale = temperature if sampling else 1.0
        log_probs = torch.log_softmax(logits / scale, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        gens = []
        for row in range(new_tokens.shape[0]):
            # Finished rows are filled with pad tokens after their last generated token.
            real = (new_tokens[row] != pad_id).nonzero()
            # A row whose first token was the pad/EOS token still generated that one token.
            length = int(real[-1]) + 1 if len(real) else 1
            response = new_tokens[row, :length].cpu()
            text = self.tokenizer.decode(response, skip_special_tokens=True)
            gens.append(Generation(response, log_probs[row, :length].cpu(), text))
        return gens
