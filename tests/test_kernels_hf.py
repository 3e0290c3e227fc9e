"""The kernel pipeline (sim) against ``transformers`` for real Llama and Qwen3 models: logits and
every gradient, for Hugging Face's half-split RoPE (permuted at load) and for interleaved-RoPE
models born in anetrain (permuted at export).

Tolerances: fp32 kernels (the same MIL programs without fp16 rounding) 1e-4 relative (max
logit error over the largest logit; L2 error of each gradient over its norm); fp16 kernels
2e-2 for logits and 1e-2 for gradients with cosine >= 0.999. Measured on the Hugging Face
models: fp32 logits 7e-7 / 9e-7 and gradients <= 1.4e-6 (Llama / Qwen3); fp16 logits
2.7e-3 / 2.4e-3 and gradients <= 3.1e-3 / 4.9e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anetrain.mil.types import FP16, FP32
from anetrain.model import ModelConfig, init_params
from anetrain.model.hf import export_hf, import_hf
from anetrain.model.reference import rmsnorm_forward
from anetrain.train.pipeline import DynamicPipeline
from hf_models import hf_logits, save_folder, torch, transformers

SEQ = 16
TOL = {"fp32": (1e-4, 1e-4), "fp16": (2e-2, 1e-2)}  # (logits, gradients)


def _hf_folder(tmp: Path, kind: str) -> Path:
    over: dict[str, object] = {"tie_word_embeddings": False} if kind.endswith("-untied") else {}
    if kind.endswith("-hd32"):  # head_dim != hidden / heads, as in the real Qwen3 (128 vs 64)
        over = {"head_dim": 32, "rope_theta": 12345.0, "rms_norm_eps": 3e-6}
    name = kind.removesuffix("-untied").removesuffix("-hd32")
    return save_folder(tmp / kind, name, max_position_embeddings=SEQ, **over)[0]


def _ours_folder(tmp: Path, kind: str) -> Path:
    """An interleaved-RoPE anetrain model, exported (rows permuted) so transformers runs it."""
    cfg = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=320, seq_len=SEQ
    )
    if kind == "qwen3":
        cfg = cfg.replace(qk_norm=True, rope_base=1e6, norm_eps=1e-6)
    params = init_params(cfg, seed=7)
    params.flat[...] *= 1.5  # less uniform attention (fp16 error grows with sharper softmax)
    for name in ("q_norm", "k_norm"):
        if name in params.tensors:
            params[name][...] = np.random.default_rng(1).uniform(0.5, 1.5, params[name].shape)
    return export_hf(tmp / f"ours-{kind}", params)


CASES = [
    pytest.param(kind, origin, dt, id=f"{kind}-{origin}-{dt}")
    for kind in ("llama", "qwen3")
    for origin in ("hf", "ours")
    for dt in ("fp32", "fp16")
] + [
    pytest.param(kind, "hf", dt, id=f"{kind}-hf-{dt}")
    for kind in ("llama-untied", "qwen3-hd32")
    for dt in ("fp32", "fp16")
]


@pytest.mark.parametrize(("kind", "origin", "dt"), CASES)
def test_kernels_equal_transformers(tmp_path: Path, kind: str, origin: str, dt: str) -> None:
    folder = (_hf_folder if origin == "hf" else _ours_folder)(tmp_path, kind)
    # float64 oracle: the fp32 tolerance then measures the kernels, not torch's own rounding
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).double().eval()
    h = import_hf(folder)
    params, cfg = h.params, h.config
    assert cfg.seq_len == SEQ and cfg.qk_norm == kind.startswith("qwen3")
    assert cfg.head_dim == (32 if kind.endswith("-hd32") else 16)
    assert cfg.tied_embeddings == (not kind.endswith("-untied"))
    seq = np.random.default_rng(2).integers(0, cfg.vocab_size, SEQ + 1)
    tokens, targets = seq[:-1], seq[1:]
    pipe = DynamicPipeline(cfg, backend="sim", dtype=FP32 if dt == "fp32" else FP16)
    try:
        pipe.stage_weights(params)
        # logits: the forward kernels, then the final norm and the classifier
        x, _ = pipe.forward(params, tokens)  # [D,S]
        xf, _ = rmsnorm_forward(x.T.astype(np.float64), params["rms_final"], cfg.norm_eps)
        logits = xf @ params.classifier.T.astype(np.float64)  # [S,V]
        ref = hf_logits(model, tokens)
        tol_logits, tol_grads = TOL[dt]
        assert np.abs(logits - ref).max() <= tol_logits * np.abs(ref).max()
        # gradients: forward + backward through the kernels vs autograd through transformers
        grads = params.zeros_like()
        loss = pipe.forward_backward(
            params, grads, tokens, targets, loss_scale=256.0, grad_scale=1 / 256
        )
        pipe.wait()
    finally:
        pipe.close()
    model.zero_grad()
    out = model(torch.as_tensor(tokens[None]), labels=None).logits[0].double()
    ref_loss = torch.nn.functional.cross_entropy(out, torch.as_tensor(targets))
    ref_loss.backward()
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5 if dt == "fp32" else 2e-3)
    export_hf(tmp_path / "grads", grads)  # our gradients in transformers' names and layout
    from safetensors.numpy import load_file

    ours = load_file(str(tmp_path / "grads" / "model.safetensors"))
    for name, p in model.named_parameters():
        if name == "lm_head.weight" and cfg.tied_embeddings:
            continue  # tied: the same tensor as embed_tokens
        exp = p.grad.double().numpy().ravel()
        got = ours[name].astype(np.float64).ravel()
        rel = np.linalg.norm(got - exp) / np.linalg.norm(exp)
        cos = got @ exp / (np.linalg.norm(got) * np.linalg.norm(exp))
        assert rel <= tol_grads and cos >= 0.999, f"{name}: relative error {rel}, cosine {cos}"


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_kernel_prefill_then_greedy_equals_transformers_generate(tmp_path: Path, kind) -> None:
    """generate --prefill kernels: the prompt through the forward kernels (fp32), decoding on
    the CPU; the continuation is transformers' greedy one."""
    from anetrain.model.generate import generate
    from anetrain.train.prefill import kernel_prefill

    folder = _hf_folder(tmp_path, kind)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).double().eval()
    params = import_hf(folder).params
    prompt = [5, 77, 140, 9, 33, 2]
    pipe = DynamicPipeline(params.config, backend="sim", dtype=FP32, forward_only=True)
    try:
        new = generate(
            params,
            params.config,
            prompt,
            SEQ - len(prompt),
            temperature=0.0,
            prefill_fn=lambda p, t, kv: kernel_prefill(pipe, p, t, kv),
        )
    finally:
        pipe.close()
    with torch.no_grad():
        ref = model.generate(
            torch.as_tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=SEQ - len(prompt),
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
    assert new == ref
