"""The simulator's fast path (numba) against its NumPy reference path: bit-identical results.

(Buffer reuse is checked the same way, against plans that allocate every value its own.)

Every simulator op runs through both paths on fp16 and fp32 tensors whose values include fp16
subnormals, overflowing products, infinities, NaN and signed zeros, with and without the flush
option; random programs (also through ``fastpath_fuzz``, the differential fuzzer) and whole training
steps (fp16 and fp32 kernels, both pipelines) follow. "Identical" means the same bytes in every
output, NaN payloads included, except which NaN an add or mul of two NaNs returns: NumPy's
own loops pick differently by array size (see ``fastpath_fuzz``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastpath_fuzz
from anetrain.mil import FP16, FP32, Builder, DType, Function, Var
from anetrain.model.config import ModelConfig
from anetrain.model.params import init_params
from anetrain.runtime.errors import BackendUnavailable, UnsupportedOpError, WeightsError
from anetrain.runtime.sim import SimBackend
from anetrain.runtime.sim import fast as fastpath
from anetrain.runtime.sim.ops import PLANNERS
from anetrain.runtime.surface import ValueSurface
from anetrain.runtime.testing import Weights
from anetrain.train.optim import AdamW
from anetrain.train.pipeline import DynamicPipeline, used_token_ids
from anetrain.train.static import StaticPipeline
from fastpath_fuzz import run_plan
from mil_strategies import BuiltProgram, float_arrays, programs
from test_train_pipeline import CFG  # the small GQA model the pipeline tests train

# Without numba the NumPy path's own checks here still run (buffer reuse against one buffer per
# value, garbage in the transient buffers between evals); only the fast path's are skipped.
HAVE_NUMBA = fastpath.fast_available()[0]
needs_numba = pytest.mark.skipif(
    not HAVE_NUMBA, reason="the fast path needs numba (the 'fast' extra)"
)

RNG = np.random.default_rng(17)
# fp16 edge values: subnormals, the smallest normal, the largest finite, ties, inf, NaN, -0
EDGES16 = np.array(
    [0.0, -0.0, 6e-8, -6e-8, 3e-5, 6.104e-5, 65504, -65504, 300, -300, 2049, np.inf, -np.inf,
     np.nan, 1 / 3, -2.5, 1e-4, 0.5],
    np.float32,
)  # fmt: skip
EDGES32 = np.array([1e-40, -1e-39, 7e4, -7e4, 65519.99, 65520, 1e-45, 3.4e38], np.float32)


def values(shape: tuple[int, ...], dtype: DType) -> np.ndarray:
    """Random normals with every edge value mixed in (fp16-representable for fp16)."""
    x = RNG.standard_normal(shape).astype(np.float32) * 4
    flat = x.reshape(-1)
    edges = EDGES16 if dtype is FP16 else np.concatenate([EDGES16, EDGES32])
    idx = RNG.choice(flat.size, size=min(flat.size, 3 * edges.size), replace=False)
    flat[idx] = np.resize(edges, idx.size)
    if dtype is FP16:
        with np.errstate(over="ignore"):
            x = x.astype(np.float16).astype(np.float32)
    return x


def assert_same_bits(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    diff = fastpath_fuzz.differences(a, b)
    assert diff is None, diff


def both_paths(fn: Function, weights: dict, inputs: list[np.ndarray]) -> None:
    """Fast path == NumPy path; buffer reuse changes nothing (against a plan without); nor
    does garbage in the transient buffers between evals (they may be given back)."""
    paths = (False, True) if HAVE_NUMBA else (False,)
    for ftz in (False, True):
        ref = run_plan(fn, inputs, weights, fast=False, ftz=ftz, reuse=False)
        assert_same_bits(ref, run_plan(fn, inputs, weights, fast=False, ftz=ftz))
        if HAVE_NUMBA:
            assert_same_bits(ref, run_plan(fn, inputs, weights, fast=True, ftz=ftz))
        for fast in paths:
            got = run_plan(fn, inputs, weights, fast=fast, ftz=ftz, garbage=True)
            assert_same_bits(ref, got)


# ---- every op -------------------------------------------------------------------------------

Build = Callable[[Builder, list[Var], DType], tuple[list[Var], dict]]
CASES: dict[str, tuple[list[tuple[int, ...]], Build]] = {}


def case(*op_types: str, shapes: list[tuple[int, ...]]) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        for op_type in op_types:
            CASES[op_type] = (shapes, functools.partial(build, op_type=op_type))
        return build

    return register


@case("add", "sub", "mul", "real_div", "pow", shapes=[(1, 6, 5, 8), (1, 6, 1, 8), (1, 1, 5, 1)])
def _binary(b, xs, dt, op_type):
    x, y, z = xs
    f = getattr(b, op_type)
    c = b.const(np.array(0.3, dt.numpy), dtype=dt)
    t = b.transpose(x, [0, 1, 3, 2])  # a non-contiguous operand
    return [f(x, x), f(x, y), f(y, x), f(x, z), f(z, x), f(x, c), f(c, x), f(t, t)], {}


@case("exp", "log", "sqrt", "rsqrt", "sigmoid", "silu", "tanh", shapes=[(1, 6, 5, 8)])
def _unary(b, xs, dt, op_type):
    (x,) = xs
    f = getattr(b, op_type)
    out = [f(x), f(b.transpose(x, [0, 1, 3, 2]))]
    if op_type in ("log", "rsqrt"):
        out.append(f(x, dt.numpy.type(1e-3)))
    return out, {}


@case("softmax", shapes=[(1, 6, 5, 8)])
def _softmax(b, xs, dt, op_type):
    (x,) = xs
    return [b.softmax(x, axis=a) for a in (-1, 1, 2)], {}


@case("reduce_sum", "reduce_mean", "reduce_max", shapes=[(1, 6, 5, 8)])
def _reduce(b, xs, dt, op_type):
    (x,) = xs
    f = getattr(b, op_type)
    return [f(x, [1], True), f(x, [-1], False), f(x, [1, 3], True)], {}


@case("reshape", "transpose", "slice_by_size", "slice_by_index", "concat", shapes=[(1, 6, 5, 8)])
def _shape(b, xs, dt, op_type):
    (x,) = xs
    y = b.mul(x, x)  # an op output, so concat can alias it into its buffer
    t = b.transpose(y, [0, 1, 3, 2])
    flat = [1, 240, 1, 1]
    out = [
        b.reshape(t, [1, 6, 1, 40]),
        b.slice_by_size(y, [0, 1, 0, 2], [1, 3, 5, 4]),
        b.slice_by_index(y, [0, 0, 1, 0], [1, 6, 5, 8], [1, 2, 2, 1]),
        b.concat([y, x, b.add(x, x)], 1),
        b.concat([t, t], 3, True),
        b.concat([b.reshape(b.exp(x), flat), b.reshape(t, flat), b.reshape(x, flat)], 1),
    ]
    return out, {}


@case("matmul", shapes=[(1, 2, 8, 6), (1, 2, 6, 5)])
def _matmul(b, xs, dt, op_type):
    x, y = xs
    return [b.matmul(x, y), b.matmul(y, x, True, True), b.matmul(x, x, False, True)], {}


@case("conv", shapes=[(1, 4, 6, 6)])
def _conv(b, xs, dt, op_type):
    (x,) = xs
    w = Weights(b)
    w1 = w.add("w1", RNG.standard_normal((6, 4, 1, 1)))
    w3 = w.add("w3", RNG.standard_normal((4, 2, 3, 3)))
    bias = b.const(RNG.standard_normal(4).astype(dt.numpy))
    if dt is FP32:
        w1, w3 = b.cast(w1, "fp32"), b.cast(w3, "fp32")
    out = [
        b.conv(x, w1),
        b.conv(x, w3, bias, [1, 1], "custom", [1, 1, 0, 2], [1, 1], 2),
        b.conv(x, w3, None, [2, 1], "valid", [0, 0, 0, 0], [1, 2], 2),
    ]
    return out, w.blobs()


@case("scaled_dot_product_attention", shapes=[(1, 2, 5, 4), (1, 2, 5, 4), (1, 1, 5, 5)])
def _sdpa(b, xs, dt, op_type):
    q, k, m = xs
    causal = b.const(np.tril(np.ones((1, 1, 5, 5), bool)))
    return [
        b.scaled_dot_product_attention(q, k, k, m),
        b.scaled_dot_product_attention(q, k, k, causal),
    ], {}


@case("cast", "quantize", "dequantize", "constexpr_affine_dequantize", shapes=[(1, 6, 5, 8)])
def _quant(b, xs, dt, op_type):
    (x,) = xs
    other, mine = ("fp32", "fp16") if dt is FP16 else ("fp16", "fp32")
    scale = dt.numpy.type(0.05)
    q = b.quantize(x, np.int8(3), scale, None, "int8")
    w = b.constexpr_affine_dequantize(
        RNG.integers(-128, 127, (4, 6, 1, 1), dtype=np.int8), np.int8(-2), dt.numpy.type(0.01), 0
    )
    out = [
        b.cast(x, other),
        b.cast(b.cast(x, other), mine),
        b.cast(b.cast(x, "int32"), mine),
        b.dequantize(q, np.int8(3), scale),
        b.conv(x, w),
    ]
    return out, {}


def test_cases_cover_every_simulator_op() -> None:
    assert set(CASES) == set(PLANNERS)


@pytest.mark.parametrize("dtype", [FP16, FP32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("op_type", sorted(PLANNERS))
def test_every_op_is_bit_identical_on_both_paths(op_type: str, dtype: DType) -> None:
    shapes, build = CASES[op_type]
    b = Builder("ios18")
    xs = [b.input(f"x{i}", dtype, s) for i, s in enumerate(shapes)]
    outs, blobs = build(b, xs, dtype)
    b.returns(*outs)
    program = b.program()
    both_paths(program.main, blobs, [values(s, dtype) for s in shapes])


# ---- random programs ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_programs_are_bit_identical(data: st.DataObject) -> None:
    built: BuiltProgram = data.draw(programs("ios18", max_ops=6), label="program")
    fn = built.program.main
    inputs = [
        data.draw(float_arrays(v.dtype, v.shape), label=v.name).astype(np.float32)
        for v in fn.inputs
    ]
    try:
        ref = run_plan(fn, inputs, {}, fast=False, ftz=False, reuse=False)
    except (UnsupportedOpError, WeightsError, KeyError):
        assume(False)  # e.g. a BLOBFILE weight with no file: nothing to compare
        return
    assert_same_bits(ref, run_plan(fn, inputs, {}, fast=False, ftz=False))
    assert_same_bits(ref, run_plan(fn, inputs, {}, fast=False, ftz=False, garbage=True))
    if HAVE_NUMBA:
        assert_same_bits(ref, run_plan(fn, inputs, {}, fast=True, ftz=False))
        assert_same_bits(ref, run_plan(fn, inputs, {}, fast=True, ftz=False, garbage=True))


@needs_numba
def test_differential_fuzzer_finds_no_mismatch() -> None:
    """Random programs with NaN payloads, boundary values and the flush option, on the plan
    level and through compiled kernels (``scripts/fuzz_fastpath.py`` runs thousands)."""
    for kinds in (None, fastpath_fuzz.ELEMENTWISE_KINDS):
        tally = fastpath_fuzz.fuzz_fast_path(120, seed_value=3, max_ops=10, kinds=kinds)
        assert not tally.mismatches and not tally.escapes, tally.mismatches[:1] or tally.escapes
        assert tally.programs >= 100 and tally.kernels >= 5, tally.summary()


# ---- the training step ----------------------------------------------------------------------


def _step(fast: bool, dtype: DType) -> tuple[float, np.ndarray]:
    params = init_params(CFG, seed=5)
    grads = params.zeros_like()
    seq = np.random.default_rng(1).integers(0, CFG.vocab_size, CFG.seq_len + 1)
    pipe = DynamicPipeline(CFG, backend=SimBackend(fast=fast), dtype=dtype)
    try:
        pipe.stage_weights(params)
        loss = pipe.forward_backward(params, grads, seq[:-1], seq[1:], 256.0, 1 / 256)
        pipe.wait()
    finally:
        pipe.close()
    return loss, grads.flat


@needs_numba
@pytest.mark.parametrize("dtype", [FP16, FP32], ids=["fp16", "fp32"])
def test_training_step_is_bit_identical(dtype: DType) -> None:
    ref_loss, ref = _step(False, dtype)
    loss, got = _step(True, dtype)
    assert np.isfinite(ref_loss) and ref.any()
    assert loss == ref_loss
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


# configs the step above does not cover: one KV head, qk-norm, an untied classifier, an
# explicit head_dim, an odd window; two optimizer steps of two windows each over a compacted
# vocabulary, the weights staged again after the (fused or NumPy) AdamW update
ODD = ModelConfig(
    dim=24, n_layers=2, n_heads=3, n_kv_heads=1, head_dim=16, hidden_dim=40, vocab_size=37,
    seq_len=13, qk_norm=True, tied_embeddings=False,
)  # fmt: skip


def _two_steps(pipeline: type, fast: bool, dtype: DType) -> tuple[list[float], np.ndarray]:
    params = init_params(ODD, seed=5)
    rng = np.random.default_rng(1)
    windows = [rng.integers(0, ODD.vocab_size // 2, ODD.seq_len + 1) for _ in range(4)]
    used = used_token_ids(np.concatenate(windows), ODD.vocab_size)
    pipe = pipeline(ODD, backend=SimBackend(fast=fast), dtype=dtype, used_ids=used)
    opt = AdamW(params.flat.size, params.decay_mask(), fast=fast)
    losses = []
    try:
        for step in range(2):
            pipe.stage_weights(params)
            grads = params.zeros_like()
            for seq in windows[2 * step : 2 * step + 2]:
                losses.append(
                    pipe.forward_backward(params, grads, seq[:-1], seq[1:], 256.0, 1 / 256)
                )
            pipe.wait()
            opt.step(params.flat, grads.flat, 1e-2, grad_scale=0.5)
    finally:
        pipe.close()
    return losses, np.concatenate([grads.flat, params.flat])


@needs_numba
@pytest.mark.parametrize("dtype", [FP16, FP32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("pipeline", [DynamicPipeline, StaticPipeline], ids=["dynamic", "static"])
def test_two_optimizer_steps_are_bit_identical(pipeline: type, dtype: DType) -> None:
    ref_losses, ref = _two_steps(pipeline, False, dtype)
    losses, got = _two_steps(pipeline, True, dtype)
    assert np.isfinite(ref_losses).all() and ref.any()
    assert losses == ref_losses
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


# ---- choosing the path ----------------------------------------------------------------------


def test_path_selection_follows_the_option_and_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(fastpath.ENV_VAR, raising=False)
    assert not SimBackend(fast=False).fast
    monkeypatch.setenv(fastpath.ENV_VAR, "0")
    assert not SimBackend().fast
    monkeypatch.setenv(fastpath.ENV_VAR, "maybe")
    with pytest.raises(BackendUnavailable, match=fastpath.ENV_VAR):  # typed: a CLI error line
        SimBackend()
    if not HAVE_NUMBA:  # the rest needs the fast path (tests/test_runtime_sim_no_numba.py)
        return
    monkeypatch.delenv(fastpath.ENV_VAR)
    assert SimBackend().fast and SimBackend(fast=True).fast
    monkeypatch.setenv(fastpath.ENV_VAR, "1")
    assert SimBackend().fast


@needs_numba
def test_surface_block_writes_round_identically() -> None:
    fast = fastpath.FastOps(ftz=False)
    sources = [
        values((5, 7), FP32),  # C-contiguous
        values((7, 5), FP32).T,  # a transposed weight matrix
        values((5, 14), FP32)[:, ::2],  # neither: the NumPy write
        values((5, 7), FP32).astype(np.float64),
    ]
    for src in sources:
        ref = ValueSurface([1, 9, 1, 12])
        got = ValueSurface([1, 9, 1, 12], store_block=fast.store_block)
        for surface in (ref, got):
            surface.fill(1.5)
            surface.write_block(src, 2, 3)
        assert np.array_equal(ref.values.view(np.uint32), got.values.view(np.uint32))


@needs_numba
def test_every_cached_kernel_can_hit_the_cache() -> None:
    """numba's cache key hashes a function's closure cells, which differ per process: a
    ``cache=True`` kernel made in a closure is compiled again in every process (and grows
    the cache index). Every cached kernel of both modules is a plain module-level function."""
    import numba

    from anetrain.runtime.sim import jit
    from anetrain.train import optim_jit

    found = [
        (f"{mod.__name__}.{name}", fn)
        for mod in (jit, optim_jit)
        for name, value in vars(mod).items()
        for fn in (value.values() if isinstance(value, dict) else [value])
        if isinstance(fn, numba.core.registry.CPUDispatcher)
    ]
    cached = [(where, fn) for where, fn in found if type(fn._cache).__name__ != "NullCache"]
    assert len(cached) >= 8, found
    for where, fn in cached:
        assert fn.py_func.__closure__ is None, f"{where} is a closure"
        assert where.endswith("." + fn.py_func.__qualname__), (
            f"{where} is {fn.py_func.__qualname__}"
        )
