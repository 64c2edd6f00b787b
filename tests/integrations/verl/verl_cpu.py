"""Test helpers for running real verl pieces on the CPU: a tiny model folder, a single-process
gloo group, and a rollout-server client whose ``generate`` runs HF ``generate`` on the CPU."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from verl.workers.rollout.replica import TokenOutput

from lamina.agents.models import smollm2_checkpoint


def save_tiny_llama(folder: Path, layers: int = 2, hidden: int = 64) -> Path:
    """A random Llama with SmolLM2's tokenizer, saved as an HF folder verl can load."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,  # untied: verl then builds on the meta device, as for big models
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> dict[str, str]:
    """What verl's ``Worker`` reads to join a one-rank process group."""
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }


def token_log_probs(scores, response: list[int]) -> list[float]:
    """Each response token's log-prob under its step's logits (``scores``: one (1, V) row per token)."""
    return [
        torch.log_softmax(score[0].float(), dim=-1)[token].item()
        for score, token in zip(scores, response, strict=False)
    ]


def hf_sample(model, tokenizer, prompt_ids, sampling_params: dict) -> tuple[list[int], list[float]]:
    """One HF ``generate`` call with verl's sampling parameters (temperature 0: greedy; top_k -1 and
    top_p 1: off): the response tokens and their log-probs."""
    ids = torch.as_tensor([list(prompt_ids)])
    temperature = float(sampling_params.get("temperature", 1.0))
    top_k = int(sampling_params.get("top_k", -1))
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=int(sampling_params.get("max_tokens", 16)),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=float(sampling_params.get("top_p", 1.0)) if temperature > 0 else None,
            top_k=top_k if top_k > 0 else 0,
            pad_token_id=tokenizer.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    response = out.sequences[0, ids.shape[1] :].tolist()
    return response, token_log_probs(out.scores, response)


class HFServerClient:
    """verl's ``LLMServerClient.generate`` interface, answered by HF ``generate`` on the CPU.

    Each request runs its own ``generate`` (a server would batch the requests that arrive
    together; ``test_requests_of_a_lock_step_overlap...`` checks that they do arrive together).
    """

    def __init__(self, model, tokenizer, seed: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.generator = torch.Generator().manual_seed(seed)
        self.requests: list[tuple[str, list[int], dict]] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        self.requests.append((request_id, list(prompt_ids), dict(sampling_params)))
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        response, log_probs = hf_sample(self.model, self.tokenizer, prompt_ids, sampling_params)
        return TokenOutput(token_ids=response, log_probs=log_probs, stop_reason="completed")


class ActionFirstClient(HFServerClient):
    """The HF client, but every other request answers with the first admissible action in tags,
    so the rollout sees valid and invalid steps (a random tiny model never writes valid ones)."""

    def __init__(self, model, tokenizer, admissible_for):
        super().__init__(model, tokenizer)
        self.admissible_for = admissible_for
        self.calls = 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        out = await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
        self.calls += 1
        action = self.admissible_for(self.tokenizer.decode(prompt_ids))
        if self.calls % 2 == 0 and action:
            out.token_ids = self.tokenizer.encode(f"<action>{action}</action>", add_special_tokens=False)
            out.log_probs = [-1.0] * len(out.token_ids)
        return out


def first_admissible(prompt_text: str) -> str | None:
    marker = "Admissible actions: '"
    if marker not in prompt_text:
        return None
    return prompt_text.split(marker, 1)[1].split("'", 1)[0]


def set_env(values: dict[str, str]) -> dict[str, str | None]:
    """Sets environment variables; returns the previous values for ``restore_env``."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
