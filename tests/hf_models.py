"""Tiny random Hugging Face models and tokenizers, built offline as test oracles.

``transformers`` builds ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` from a config with random
weights (every norm weight randomised too, so a wrongly permuted q/k norm cannot hide), and a
BPE tokenizer is trained by ``tokenizers`` on a few sentences; both are saved to a folder the way
the hub's folders look (config.json, model.safetensors, tokenizer.json, tokenizer_config.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXT = [
    "Once upon a time there was a little robot who loved to read.",
    "The robot read every book in the library, then wrote its own story.",
    "Tom and Lily went to the park. They saw a big red ball and a small dog.",
    "Ünïcödé words, numbers like 12345, and emoji 🙂 are part of the text too.",
] * 3
VOCAB = 320  # the model's vocabulary: larger than the tokenizer's (padded rows, as real ones)


def build_tokenizer(kind: str, vocab: int = 300) -> Any:
    """A byte-level BPE (Qwen3-like, EOS only) or one that adds BOS (Llama-like)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>"] if kind == "llama" else ["<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer)
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return tok


def hf_config(kind: str, **over: Any) -> Any:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6 if kind == "qwen3" else 1e-5,
        initializer_range=0.1,
    )
    common.update(over)
    if kind == "qwen3":
        rope = common.pop("rope_theta", 1e6)
        return transformers.Qwen3Config(**common, rope_parameters=_rope(rope))
    rope = common.pop("rope_theta", 5e5)
    return transformers.LlamaConfig(**common, rope_parameters=_rope(rope))


def _rope(theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta}


def build_model(kind: str, seed: int = 0, **over: Any) -> Any:
    torch.manual_seed(seed)
    cfg = hf_config(kind, **over)
    cls = transformers.Qwen3ForCausalLM if kind == "qwen3" else transformers.LlamaForCausalLM
    model = cls(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    return model


def save_folder(path: Path, kind: str, seed: int = 0, **over: Any) -> tuple[Path, Any, Any]:
    """Write a complete folder; returns (path, model, tokenizer)."""
    model = build_model(kind, seed, **over)
    model.save_pretrained(path)
    tok = build_tokenizer(kind)
    tok.save(str(path / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>"} if kind == "llama" else {}
    if kind == "qwen3":
        specials = {"eos_token": "<|endoftext|>"}
    (path / "tokenizer_config.json").write_text(json.dumps(specials))
    return path, model, tok


def save_fp16_folder(path: Path, kind: str, seed: int = 0) -> tuple[Path, Any, Any]:
    """:func:`save_folder` with weights exactly representable in fp16 (a LoRA base is held in
    fp16, so the oracle and anetrain then start from the very same weights)."""
    path, model, tok = save_folder(path, kind, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.save_pretrained(path)
    return path, model, tok


def hf_logits(model: Any, tokens: Any) -> Any:
    with torch.no_grad():
        out = model(torch.as_tensor(tokens, dtype=torch.long).reshape(1, -1))
    return out.logits[0].double().numpy()
