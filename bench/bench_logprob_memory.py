"""Peak memory of token log-probs: the chunked LM head vs a full (B, T, V) fp32 logits copy.

    python -m bench.bench_logprob_memory [--rows 8] [--tokens 512]

SmolLM2-135M (49,152-token vocabulary), fp32 on the CPU, forward and backward through block 15
(the default job's trainable block). Each side runs in a fresh process; peak RSS is that process's.
Naive: ``model(...).logits.float().log_softmax(-1).gather(...)``, as the update did before issue 7.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import gib, in_fresh_process


def peak(chunked: bool, rows: int, tokens: int) -> float:
    from lamina.agents.logprobs import pack_rows, response_log_probs
    from lamina.agents.models import ModelConfig, load_model
    from lamina.trainer.layers import apply_layer_selection, trainable_parameter_names

    model, _ = load_model(ModelConfig(name="smollm2-135m"))
    apply_layer_selection(model, trainable_parameter_names(model, [15]))
    gen = torch.Generator().manual_seed(0)
    half = tokens // 2
    prompts = [torch.randint(10, 40000, (half,), generator=gen) for _ in range(rows)]
    responses = [torch.randint(10, 40000, (half,), generator=gen) for _ in range(rows)]
    packed = pack_rows(prompts, responses, 0)
    if chunked:
        log_probs, _ = response_log_probs(model, packed)
    else:
        logits = model(
            input_ids=packed.input_ids, attention_mask=packed.attention_mask, position_ids=packed.position_ids
        ).logits[:, -half - 1 : -1]
        log_probs = logits.float().log_softmax(-1).gather(-1, packed.response_ids[..., None]).squeeze(-1)
    log_probs.sum().backward()
    return float(log_probs.detach().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()
    naive_sum, naive_peak = in_fresh_process(peak, False, args.rows, args.tokens)
    chunked_sum, chunked_peak = in_fresh_process(peak, True, args.rows, args.tokens)
    print(
        f"{args.rows} x {args.tokens} tokens: naive {gib(naive_peak)}, chunked {gib(chunked_peak)} "
        f"({chunked_peak / naive_peak:.2f}x); summed log-probs {naive_sum:.2f} vs {chunked_sum:.2f}"
    )


if __name__ == "__main__":
    main()
