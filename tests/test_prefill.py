"""Prompt prefill through the dynamic kernel pipeline (sim backend) against the NumPy prefill.

Tolerances, as ``max|got - want| / max|want|`` over each array: fp32 kernels (``dtype=FP32``,
the same MIL programs without fp16 rounding) <= 1e-5 for every layer's K and V and for the
last-position logits (measured about 1e-6). fp16 kernels (what the ANE runs: fp16 taps and an
fp16 residual stream) <= 1e-2 (measured about 3e-3).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anetrain.cli import main
from anetrain.mil.types import FP16, FP32
from anetrain.model.config import ModelConfig
from anetrain.model.generate import generate
from anetrain.model.params import Params, init_params
from anetrain.model.reference import KVCache, prefill
from anetrain.train.checkpoint import Checkpoint, save_checkpoint
from anetrain.train.pipeline import DynamicPipeline
from anetrain.train.prefill import KernelPrefill, PrefillError, kernel_prefill

# GQA 4/2, head_dim explicit (QD = 64 != dim), DeepNet residual scaling
CFG = ModelConfig(
    dim=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    hidden_dim=64,
    vocab_size=64,
    seq_len=16,
    residual_scaling=True,
)


def random_params(cfg: ModelConfig, seed: int = 0, std: float = 0.3) -> Params:
    """Weights large enough that greedy decoding does not just repeat one token."""
    rng = np.random.default_rng(seed)
    params = Params(cfg, (rng.standard_normal(cfg.n_params) * std).astype(np.float32))
    params["rms_att"][...] = params["rms_ffn"][...] = params["rms_final"][...] = 1.0
    return params


def rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def pipe32() -> Iterator[DynamicPipeline]:
    pipe = DynamicPipeline(CFG, backend="sim", dtype=FP32, overlap_blas=False)
    yield pipe
    pipe.close()


@pytest.mark.parametrize("length", [1, 7, 16])
@pytest.mark.parametrize("init", ["random", "init_params"])
def test_fp32_kernels_match_numpy_prefill(pipe32: DynamicPipeline, length: int, init: str) -> None:
    params = random_params(CFG, seed=length) if init == "random" else init_params(CFG, seed=2)
    prompt = np.random.default_rng(length).integers(0, CFG.vocab_size, length)
    want_kv, got_kv = KVCache.empty(CFG), KVCache.empty(CFG)
    want = prefill(params, prompt, want_kv)
    got = kernel_prefill(pipe32, params, prompt, got_kv)
    assert got.shape == (CFG.vocab_size,) and got.dtype == np.float32
    assert got_kv.length == want_kv.length == length
    assert rel(got, want) <= 1e-5
    for layer in range(CFG.n_layers):
        assert rel(got_kv.k[layer, :, :length], want_kv.k[layer, :, :length]) <= 1e-5
        assert rel(got_kv.v[layer, :, :length], want_kv.v[layer, :, :length]) <= 1e-5
    # nothing written past the prompt
    assert not got_kv.k[:, :, length:].any() and not got_kv.v[:, :, length:].any()


def test_fp16_kernels_match_numpy_prefill() -> None:
    params = random_params(CFG, seed=3)
    prompt = np.random.default_rng(3).integers(0, CFG.vocab_size, 11)
    want_kv, got_kv = KVCache.empty(CFG), KVCache.empty(CFG)
    want = prefill(params, prompt, want_kv)
    with KernelPrefill(CFG, backend="sim", dtype=FP16) as kernels:
        got = kernels(params, prompt, got_kv)
    assert rel(got, want) <= 1e-2
    assert rel(got_kv.k[:, :, :11], want_kv.k[:, :, :11]) <= 1e-2
    assert rel(got_kv.v[:, :, :11], want_kv.v[:, :, :11]) <= 1e-2


def test_staged_weights_are_reused(pipe32: DynamicPipeline) -> None:
    params = random_params(CFG, seed=4)
    a, b = (np.random.default_rng(s).integers(0, CFG.vocab_size, 9) for s in (5, 6))
    first = kernel_prefill(pipe32, params, a, KVCache.empty(CFG))
    kv = KVCache.empty(CFG)
    second = kernel_prefill(pipe32, params, b, kv, stage=False)
    want_kv = KVCache.empty(CFG)
    assert rel(second, prefill(params, b, want_kv)) <= 1e-5
    assert rel(kv.k[:, :, :9], want_kv.k[:, :, :9]) <= 1e-5
    assert rel(first, prefill(params, a, KVCache.empty(CFG))) <= 1e-5


def test_greedy_generation_after_kernel_prefill_is_unchanged() -> None:
    cfg = CFG.replace(seq_len=32)
    params = random_params(cfg, seed=7)
    prompt = [1, *np.random.default_rng(7).integers(3, cfg.vocab_size, 9).tolist()]
    want = generate(params, cfg, prompt, 20, temperature=0.0, seed=1)
    assert len(set(want)) > 3  # a non-trivial continuation
    with KernelPrefill(cfg, backend="sim", dtype=FP32) as kernels:
        assert len(kernels.pipeline.kernels) == 3  # forward kernels only
        for kwargs in ({"temperature": 0.0}, {"top_k": 1, "temperature": 1.5}):
            timings: dict[str, float] = {}
            got = generate(
                params, cfg, prompt, 20, seed=1, prefill_fn=kernels, timings=timings, **kwargs
            )
            assert got == want
            assert timings["prefill_s"] > 0 and timings["decode_s"] > 0


def test_too_long_prompt_and_bad_inputs(pipe32: DynamicPipeline) -> None:
    params = random_params(CFG)
    big = KVCache.empty(CFG, max_len=32)
    with pytest.raises(PrefillError, match="longer than the kernel pipeline's window of 16"):
        kernel_prefill(pipe32, params, np.zeros(17, dtype=np.int64), big)
    assert big.length == 0 and not big.k.any()
    with pytest.raises(PrefillError, match="exceeds the KV cache"):
        kernel_prefill(pipe32, params, np.zeros(9, dtype=np.int64), KVCache.empty(CFG, 8))
    with pytest.raises(PrefillError, match="at least one token"):
        kernel_prefill(pipe32, params, [], KVCache.empty(CFG))
    with pytest.raises(PrefillError, match=r"ids must be in \[0, 64\)"):
        kernel_prefill(pipe32, params, [1, 64], KVCache.empty(CFG))
    other = random_params(CFG.replace(n_kv_heads=4))
    with pytest.raises(PrefillError, match="do not match"):
        kernel_prefill(pipe32, other, [1, 2], KVCache.empty(CFG))
    with pytest.raises(PrefillError, match="does not fit"):
        kernel_prefill(pipe32, params, [1, 2], KVCache.empty(CFG.replace(n_kv_heads=4)))


# --- the CLI ---------------------------------------------------------------------------------

CLI_MODEL = ModelConfig(
    dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=512, seq_len=32
)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prefill")
    save_checkpoint(root / "ckpt_last.safetensors", Checkpoint(CLI_MODEL, init_params(CLI_MODEL)))
    (root / "config.json").write_text(json.dumps({"tokenizer": "builtin"}))
    return root


def run_generate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_kernel_prefill(ckpt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--ckpt", ckpt_dir, "--prefill", "kernels", "--max-tokens", "5", "--seed", "1"]
    code, out, err = run_generate(capsys, *args, "--prompt", "Once upon a time")
    assert code == 0, err
    assert out.startswith("Once upon a time") and len(out.strip()) > len("Once upon a time")
    assert re.search(r"^prefill: kernels on sim \(\w+\), window 32; compiled 3 kernels", err, re.M)
    assert re.search(r"^prefill: \d+ prompt tokens in [\d.]+ s \(kernels\)$", err, re.M), err
    assert re.search(r"^[1-5] tokens in [\d.]+ s \([\d,.]+ tokens/s, seed 1\)$", err, re.M), err
    # the default prompt, an explicit backend and chip
    code, out, err = run_generate(capsys, *args, "--backend", "sim", "--chip", "m4max")
    assert code == 0 and out.strip(), err
    code, _, err = run_generate(capsys, "--ckpt", ckpt_dir, "--max-tokens", "2", "--seed", "1")
    assert code == 0 and "prompt tokens in" in err and "(numpy)" in err


def expect_error(capsys: pytest.CaptureFixture[str], message: str, *args: str | Path) -> None:
    code, out, err = run_generate(capsys, *args)
    assert code == 1, (out, err)
    assert err.startswith("anetrain: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_cli_errors(ckpt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--ckpt", ckpt_dir, "--max-tokens", "3"]
    long_prompt = "Once upon a time there was a little dog. " * 5
    expect_error(capsys, "seq_len is 32", *base, "--prefill", "kernels", "--prompt", long_prompt)
    expect_error(capsys, "only apply to --prefill kernels", *base, "--backend", "sim")
    expect_error(capsys, "only apply to --prefill kernels", *base, "--chip", "m4")
    from anetrain.runtime import backend_status

    if not backend_status("ane")[0]:
        expect_error(capsys, "backend 'ane'", *base, "--prefill", "kernels", "--backend", "ane")
