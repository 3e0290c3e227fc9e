"""Backend contract: what every backend must do, checked against float64 NumPy references.

Runs on ``sim`` always; on ``ane`` only on macOS with ``ANE_HARDWARE_TESTS=1``. These are the
equivalents of the original's hardware test table (rmsnorm backward, 32000-vocab classifier and
softmax, weight reload, QoS sweep, perf stats) plus request reuse, the compile budget, baked
weights, the ignored SDPA mask and fp16 overflow/underflow.

Every surface respects the hardware's floor (at least the chip's ``min_surface_bytes`` and a
width of 32: ``T.floor_seq``), on every backend, so the same shapes run on the ANE; the
``backend`` fixture checks each compiled kernel.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from anetrain import runtime
from anetrain.mil import FP16, Builder
from anetrain.runtime import testing as T


def _backend_params() -> list:
    params: list = ["sim"]
    if sys.platform == "darwin" and os.environ.get("ANE_HARDWARE_TESTS") == "1":
        params.append(pytest.param("ane", marks=pytest.mark.ane_hardware))
    return params


def _check_floor(kernel: runtime.Kernel) -> runtime.Kernel:
    floor = kernel.chip.min_surface_bytes
    for spec in (*kernel.input_specs, *kernel.output_specs):
        assert spec.nbytes >= floor and spec.shape[-1] >= T.MIN_WIDTH, (kernel.name, spec)
    return kernel


@pytest.fixture(params=_backend_params())
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> runtime.Backend:
    name = request.param
    b = runtime.get_backend(name)
    compile_ = b.compile
    monkeypatch.setattr(b, "compile", lambda *a, **kw: _check_floor(compile_(*a, **kw)))
    return b


@pytest.fixture
def target(backend: runtime.Backend) -> str:
    return backend.chip.dialect


RNG = np.random.default_rng(1234)


def close(got: np.ndarray, want: np.ndarray, atol: float, rtol: float = 1e-2) -> None:
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


def test_conv(backend: runtime.Backend, target: str) -> None:
    w = (RNG.standard_normal((96, 64)) / 8).astype(np.float16)
    seq = T.floor_seq(backend.chip, 64, 96)
    prog, weights = T.conv_program(w, seq, target)
    x = RNG.standard_normal((64, seq)).astype(np.float32)
    with backend.compile(prog, weights) as k:
        k.input.write(x)
        k.eval()
        close(k.output.read(), w.astype(np.float64) @ T.f16(x), atol=1e-2)


def test_matmul(backend: runtime.Backend, target: str) -> None:
    m, kk, n = 192, 40, 128  # output [1, 192, 1, 128] fp16 = 48 KiB, the floor
    a = RNG.standard_normal((m, kk)).astype(np.float32)
    bm = RNG.standard_normal((kk, n)).astype(np.float32)
    with backend.compile(T.matmul_program(m, kk, n, target)) as k:
        y = k(T.pack_matmul(a, bm))
        close(y.reshape(m, n), T.f16(a) @ T.f16(bm), atol=2e-2)


def test_softmax(backend: runtime.Backend, target: str) -> None:
    seq = T.floor_seq(backend.chip, 256)
    x = RNG.uniform(-5, 5, (256, seq)).astype(np.float32)
    with backend.compile(T.softmax_program(256, seq, target)) as k:
        y = k(x).reshape(256, seq)
    close(y, T.softmax_ref(T.f16(x)), atol=1e-3)
    close(y.sum(axis=0), np.ones(seq), atol=1e-2)


def test_rmsnorm_forward(backend: runtime.Backend, target: str) -> None:
    dim = 128
    seq = T.floor_seq(backend.chip, dim)
    w = RNG.uniform(0.5, 1.5, dim).astype(np.float16)
    x = RNG.standard_normal((dim, seq)).astype(np.float32)
    prog, weights = T.rmsnorm_program(w, seq, target=target)
    with backend.compile(prog, weights) as k:
        y = k(x).reshape(dim, seq)
    close(y, T.rmsnorm_ref(T.f16(x), w.astype(np.float64)), atol=2e-2)


def test_rmsnorm_backward(backend: runtime.Backend, target: str) -> None:
    """The original's test_rmsnorm_bwd: max error < 0.05 against the analytic gradient."""
    dim = 128
    seq = T.floor_seq(backend.chip, dim, 2 * dim)
    w = RNG.uniform(0.5, 1.5, dim).astype(np.float16)
    x = RNG.standard_normal((dim, seq)).astype(np.float32)
    dy = RNG.standard_normal((dim, seq)).astype(np.float32)
    prog, weights = T.rmsnorm_bwd_program(w, seq, target=target)
    with backend.compile(prog, weights) as k:
        dx = k(np.concatenate([x, dy])).reshape(dim, seq)
    want = T.rmsnorm_bwd_ref(T.f16(x), T.f16(dy), w.astype(np.float64))
    assert np.abs(dx - want).max() < 0.05
    # and the reference itself is the gradient of sum(dy * rmsnorm(x)): finite differences
    xd, dyd, wd = T.f16(x)[:, :2], T.f16(dy)[:, :2], w.astype(np.float64)
    h, i = 1e-6, 3
    xp, xm = xd.copy(), xd.copy()
    xp[i] += h
    xm[i] -= h
    fd = ((T.rmsnorm_ref(xp, wd) - T.rmsnorm_ref(xm, wd)) * dyd).sum(axis=0) / (2 * h)
    close(T.rmsnorm_bwd_ref(xd, dyd, wd)[i], fd, atol=1e-6, rtol=1e-5)


def test_causal_attention(backend: runtime.Backend, target: str) -> None:
    heads, hd = 4, 16
    seq = T.floor_seq(backend.chip, heads * hd, 3 * heads * hd)
    qkv = RNG.standard_normal((3 * heads * hd, seq)).astype(np.float32)
    prog, weights = T.attention_program(heads, hd, seq, target)
    with backend.compile(prog, weights) as k:
        y = k(qkv).reshape(heads * hd, seq)
    close(y, T.attention_ref(T.f16(qkv), heads), atol=2e-2)


def test_request_reuse_one_kernel_many_inputs(backend: runtime.Backend, target: str) -> None:
    w = (RNG.standard_normal((32, 48)) / 7).astype(np.float16)
    seq = T.floor_seq(backend.chip, 32, 48)
    prog, weights = T.conv_program(w, seq, target)
    xs = [RNG.standard_normal((48, seq)).astype(np.float32) for _ in range(3)]
    with backend.compile(prog, weights) as k:
        surfaces = []
        for x in xs:
            s = k.new_surface()
            s.write(x)
            surfaces.append(s)
        requests = [k.request(s) for s in surfaces]
        for _ in range(2):  # any order, repeatedly: outputs follow the request's input
            for x, req in zip(xs, requests, strict=True):
                req.eval()
                assert req.outputs[0] is k.output  # outputs are shared
                close(k.output.read(), w.astype(np.float64) @ T.f16(x), atol=1e-2)


def test_compile_budget(backend: runtime.Backend, target: str) -> None:
    limited = runtime.get_backend(backend.name, backend.chip, compile_budget=0)
    limited.compile_budget = limited.compile_count + 2
    prog = T.softmax_program(8, T.floor_seq(backend.chip, 8), target)
    kernels = [limited.compile(prog), limited.compile(prog)]
    with pytest.raises(runtime.CompileBudgetExceeded, match="compile budget") as info:
        limited.compile(prog)
    assert info.value.budget == limited.compile_budget
    assert isinstance(info.value, runtime.AneRuntimeError)
    for k in kernels:
        k.unload()


def test_weights_baked_at_compile(backend: runtime.Backend, target: str) -> None:
    """Changing the weights dict or its buffer after compile, even across unload/load (the
    original's test_weight_reload), does not change results."""
    w = np.eye(64, dtype=np.float16)
    seq = T.floor_seq(backend.chip, 64)
    prog, weights = T.conv_program(w, seq, target)
    key = next(iter(weights))
    buf = bytearray(weights[key])
    weights[key] = buf
    x = RNG.standard_normal((64, seq)).astype(np.float32)
    with backend.compile(prog, weights) as k:
        before = k(x)
        new_bytes = T.conv_program(3 * w, seq, target)[1][key]
        buf[:] = new_bytes  # mutate the buffer in place
        weights[key] = new_bytes  # and replace the dict entry
        assert np.array_equal(k(x), before)
        k.unload()
        k.load()
        assert np.array_equal(k(x), before)
        close(before.reshape(64, seq), T.f16(x), atol=0)


def test_sdpa_ignores_attn_mask(backend: runtime.Backend, target: str) -> None:
    if "ios18" not in backend.chip.opsets:
        pytest.skip("scaled_dot_product_attention needs ios18")
    seq, hd = 192, 128  # output [1, 1, 192, 128] fp16 = 48 KiB, the floor
    b = Builder(target)
    x = b.input("qkv", FP16, [1, 3, seq, hd])
    parts = [
        b.slice_by_size(x, T.ints(b, [0, i, 0, 0], f"b{i}"), T.ints(b, [1, 1, seq, hd], f"s{i}"))
        for i in range(3)
    ]
    wts = T.Weights(b)
    mask = wts.add("mask", T.causal_mask(seq).reshape(1, 1, seq, seq))
    b.returns(b.scaled_dot_product_attention(*parts, mask, name="y"))
    data = RNG.standard_normal((3, seq, hd)).astype(np.float32)
    with backend.compile(b.program(), wts.blobs()) as k:
        y = k(data.reshape(3 * seq, hd)).reshape(seq, hd)
    q, kk, v = T.f16(data)
    unmasked = T.softmax_ref(q @ kk.T / np.sqrt(hd), axis=-1) @ v
    close(y, unmasked, atol=1e-2)
    masked = T.softmax_ref(q @ kk.T / np.sqrt(hd) + T.causal_mask(seq), axis=-1) @ v
    assert np.abs(y - masked).max() > 0.1


def _add_rows(backend: runtime.Backend, target: str, rows: list[list[float]]) -> list[float]:
    """y = row 0 + row 1 over a [1, 2, 1, S] input at the floor; the values sit in the first
    columns (the rest are zeros) and the first len(row) sums are returned."""
    seq = T.floor_seq(backend.chip, 1)
    b = Builder(target)
    x = b.input("x", FP16, [1, 2, 1, seq])
    size = T.ints(b, [1, 1, 1, seq], "sz")
    a = b.slice_by_size(x, T.ints(b, [0, 0, 0, 0], "ba"), size)
    c = b.slice_by_size(x, T.ints(b, [0, 1, 0, 0], "bc"), size)
    b.returns(b.add(a, c, name="y"))
    data = np.zeros((2, seq), np.float32)
    data[:, : len(rows[0])] = rows
    with backend.compile(b.program()) as k:
        y = k(data).ravel()
    assert not y[len(rows[0]) :].any()
    return y[: len(rows[0])].tolist()


def test_fp16_overflow_to_inf(backend: runtime.Backend, target: str) -> None:
    y = _add_rows(backend, target, [[65504, 65504, -65504, 1], [15, 16, -16, 2]])
    assert y == [65504.0, np.inf, -np.inf, 3.0]


def test_fp16_subnormals_preserved(backend: runtime.Backend, target: str) -> None:
    tiny = 2.0**-24
    y = _add_rows(backend, target, [[tiny, 3 * tiny, 2**-14, 0], [tiny, -tiny, -tiny, -tiny]])
    assert y == [2 * tiny, 2 * tiny, 2**-14 - tiny, -tiny]


def test_classifier_forward_and_softmax_32000(backend: runtime.Backend, target: str) -> None:
    """The original's test_classifier: logits = embed @ x over a 32000 vocab, then softmax."""
    vocab, dim = 32000, 256
    seq = T.floor_seq(backend.chip, dim)
    embed = RNG.uniform(-0.02, 0.02, (vocab, dim)).astype(np.float16)
    x = RNG.uniform(-0.1, 0.1, (dim, seq)).astype(np.float32)
    prog, weights = T.conv_program(embed, seq, target)
    with backend.compile(prog, weights) as k:
        logits = k(x).reshape(vocab, seq)
    want = embed.astype(np.float64) @ T.f16(x)
    assert np.abs(logits - want).max() < 1.0
    close(logits, want, atol=1e-3)
    seq = T.floor_seq(backend.chip, vocab)
    z = RNG.uniform(-5, 5, (vocab, seq)).astype(np.float32)
    with backend.compile(T.softmax_program(vocab, seq, target)) as k:
        p = k(z).reshape(vocab, seq)
    assert np.abs(p[:, :4] - T.softmax_ref(T.f16(z))[:, :4]).max() < 0.01
    close(p.sum(axis=0), np.ones(seq), atol=2e-2)


QOS_VALUES = [0, 1, 5, 10, 15, 17, 19, 21, 25, 31, 33, 40, 47, 50, 55, 60, 63]


def test_qos_sweep_has_no_effect(backend: runtime.Backend, target: str) -> None:
    w = (RNG.standard_normal((64, 64)) / 8).astype(np.float16)
    seq = T.floor_seq(backend.chip, 64)
    prog, weights = T.conv_program(w, seq, target)
    x = RNG.standard_normal((64, seq)).astype(np.float32)
    with backend.compile(prog, weights, qos=0) as k:
        k.input.write(x)
        k.eval()
        first = k.output.read()
        for q in QOS_VALUES:
            k.eval(qos=q)
            assert np.array_equal(k.output.read(), first), q
    with backend.compile(prog, weights, qos=63) as k2:
        assert k2.qos == 63
        assert np.array_equal(k2(x).reshape(64, seq), first)


def test_perf_stats_after_eval(backend: runtime.Backend, target: str) -> None:
    with backend.compile(T.softmax_program(64, T.floor_seq(backend.chip, 64), target)) as k:
        assert k.stats.evals == 0 and k.stats.wall_ns is None
        k.eval()
        k.eval()
        assert k.stats.evals == 2
        assert k.stats.wall_ns is not None and k.stats.wall_ns > 0
        assert k.stats.hw_ns is None or k.stats.hw_ns > 0


def test_unload_and_context_manager(backend: runtime.Backend, target: str) -> None:
    with backend.compile(T.softmax_program(8, T.floor_seq(backend.chip, 8), target)) as k:
        k.eval()
    assert not k.loaded
    with pytest.raises(runtime.KernelUnloadedError, match="unloaded"):
        k.eval()
    k.unload()  # idempotent
    k.load()
    k.eval()
    k.unload()
