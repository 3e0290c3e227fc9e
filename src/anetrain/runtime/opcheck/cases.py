"""Seeded random configurations of every registry op: shapes, attributes, dtypes, values.

A :class:`Case` holds the keyword arguments of one op call, usable both as ``Builder.<op>(...)``
and ``mb.<op>(...)`` (coremltools' builder takes the same parameter names). Arguments named in
``runtime`` become function inputs on the simulator, so the op really runs at eval time instead
of being folded at compile time. Most draws are valid; a few percent break one rule on purpose
(an axis out of range, a shape that does not broadcast, a dtype mismatch) so that acceptance is
compared as well as values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOATS = ("fp16", "fp32")
# what data movement takes (floats weighted twice); int8/uint8 only from iOS17, which the
# opsets must tell apart
DATA_DTYPES = (*FLOATS, *FLOATS, "int32", "bool", "int8", "uint8")
NP = {
    "fp16": np.float16,
    "fp32": np.float32,
    "int32": np.int32,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


@dataclass
class Case:
    """One op call: ``op(**kwargs)`` in ``opset``; ``runtime`` names are fed at eval time."""

    op: str
    opset: str
    kwargs: dict[str, Any]
    runtime: tuple[str, ...] = ()
    # "coremltools", or "numpy" where coremltools has no usable value inference for this call
    reference: str = "coremltools"

    def __str__(self) -> str:
        parts = [f"{k}={_describe(v)}" for k, v in self.kwargs.items()]
        live = f" runtime={list(self.runtime)}" if self.runtime else ""
        return f"{self.op}<{self.opset}>({', '.join(parts)}){live}"


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    if isinstance(value, np.ndarray) and value.size > 6:
        return f"{value.dtype}{list(value.shape)}"
    if isinstance(value, np.ndarray | np.generic):
        return f"{value.dtype}{np.asarray(value).tolist()}"
    return repr(value)


# --------------------------------------------------------------------------------------------
# random building blocks


def _pick(rng: np.random.Generator, options: Any) -> Any:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _shape(rng: np.random.Generator, lo: int = 0, hi: int = 4, side: int = 4) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, side + 1, size=int(rng.integers(lo, hi + 1))))


def _floats(
    rng: np.random.Generator,
    dtype: str,
    shape: tuple[int, ...],
    scale: float = 1.0,
    specials: bool = True,
) -> np.ndarray:
    """Normal values with, now and then, zeros, signed zeros and values near the fp16 edges."""
    x = rng.standard_normal(shape) * scale
    if specials and x.size and _chance(rng, 0.3):
        flat = x.reshape(-1)
        edge = [0.0, -0.0, 1e-6, -3e-5, 6e4, -7e4, 2.0**-24, 1.0]
        for i in rng.integers(0, flat.size, size=max(1, flat.size // 4)):
            flat[i] = _pick(rng, edge)
    with np.errstate(over="ignore"):
        return np.asarray(x, NP[dtype])


def _ints(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    info = np.iinfo(NP[dtype])
    lo, hi = (-1000, 1000) if dtype == "int32" and not _chance(rng, 0.2) else (info.min, info.max)
    return rng.integers(max(lo, info.min), min(hi, info.max), size=shape, endpoint=True).astype(
        NP[dtype]
    )


def _values(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return _floats(rng, dtype, shape) if dtype in FLOATS else _ints(rng, dtype, shape)


def _i32(values: Any) -> np.ndarray:
    return np.asarray(values, np.int32)


def _broadcast_partner(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts with ``shape`` (or, rarely, one that does not)."""
    if _chance(rng, 0.05) and shape:
        bad = list(shape)
        bad[-1] += 1
        return tuple(bad)
    keep = int(rng.integers(0, len(shape) + 1))
    tail = [d if _chance(rng, 0.6) else 1 for d in shape[len(shape) - keep :]]
    lead = [int(d) for d in rng.integers(1, 3, size=int(rng.integers(0, 2)))]
    return tuple(lead + tail) if len(lead) + len(tail) <= 5 else tuple(tail)


def _float_dtype(rng: np.random.Generator) -> str:
    return _pick(rng, FLOATS)


def _opset(rng: np.random.Generator) -> str:
    return _pick(rng, ("ios16", "ios18"))


def _runtime(rng: np.random.Generator, *names: str) -> tuple[str, ...]:
    """Usually every tensor argument at run time, sometimes a subset (mixed const/run time)."""
    if _chance(rng, 0.75):
        return names
    return tuple(n for n in names if _chance(rng, 0.5))


def _live_shape(rng: np.random.Generator, *names: str) -> tuple[str, ...]:
    """Now and then a shape-deciding argument at run time (coremltools allows it there)."""
    return tuple(n for n in names if _chance(rng, 0.03))


# --------------------------------------------------------------------------------------------
# generators, one per op family

Generator = Callable[[np.random.Generator], Case]


def _binary(op: str) -> Generator:
    def gen(rng: np.random.Generator) -> Case:
        dtypes = (*FLOATS, *FLOATS, "int32", "int8") if op in ("add", "sub", "mul") else FLOATS
        dtype = _pick(rng, dtypes)
        xs = _shape(rng)
        ys = _broadcast_partner(rng, xs)
        if _chance(rng, 0.5):
            xs, ys = ys, xs
        x, y = _values(rng, dtype, xs), _values(rng, dtype, ys)
        if op == "pow" and dtype in FLOATS:
            x = np.abs(x) if _chance(rng, 0.8) else x
            y = np.asarray(rng.integers(-3, 4, size=ys) * 0.5, NP[dtype])
        if _chance(rng, 0.04):
            y = y.astype(_pick(rng, [d for d in NP.values() if d != NP[dtype]]))
        return Case(op, _opset(rng), {"x": x, "y": y}, _runtime(rng, "x", "y"))

    return gen


def _unary(op: str) -> Generator:
    scales = {"exp": 4.0, "sigmoid": 6.0, "silu": 6.0, "tanh": 3.0}

    def gen(rng: np.random.Generator) -> Case:
        dtype = _float_dtype(rng)
        x = _floats(rng, dtype, _shape(rng), scales.get(op, 1.0))
        if op in ("sqrt", "log", "rsqrt") and _chance(rng, 0.8):
            x = np.abs(x)
        if _chance(rng, 0.03):
            x = _ints(rng, "int32", x.shape)  # float-only ops
        kwargs: dict[str, Any] = {"x": x}
        if op in ("log", "rsqrt") and _chance(rng, 0.6):
            eps_dtype = dtype if _chance(rng, 0.6) else _pick(rng, FLOATS)
            eps = _pick(rng, (1e-45, 1e-12, 1e-6, 1e-3, 0.5))
            with np.errstate(under="ignore"):
                kwargs["epsilon"] = NP[eps_dtype](eps)
            if _chance(rng, 0.05):
                kwargs["epsilon"] = np.full((2,), eps, NP[eps_dtype])
        case = Case(op, _opset(rng), kwargs, _runtime(rng, "x"))
        if op == "silu":
            case.reference = "numpy"  # coremltools' silu has no value_inference
        return case

    return gen


def _axis(rng: np.random.Generator, rank: int) -> int:
    if _chance(rng, 0.04):
        return _pick(rng, (rank, -rank - 1))
    return int(rng.integers(-rank, rank)) if rank else 0


def gen_softmax(rng: np.random.Generator) -> Case:
    dtype = _float_dtype(rng)
    x = _floats(rng, dtype, _shape(rng, 1), 3.0)
    if _chance(rng, 0.03):
        x = _ints(rng, "int32", x.shape)
    kwargs = {"x": x, "axis": np.int32(_axis(rng, x.ndim))}
    return Case("softmax", _opset(rng), kwargs, _runtime(rng, "x"))


def _reduce(op: str) -> Generator:
    def gen(rng: np.random.Generator) -> Case:
        dtype = _pick(rng, (*FLOATS, "int32"))
        x = _values(rng, dtype, _shape(rng, 1))
        kwargs: dict[str, Any] = {"x": x}
        if _chance(rng, 0.85):
            n = int(rng.integers(1, x.ndim + 1))
            axes = [int(a) for a in rng.permutation(x.ndim)[:n]]
            axes = [a - x.ndim if _chance(rng, 0.3) else a for a in axes]
            if _chance(rng, 0.04):
                axes.append(axes[0] if _chance(rng, 0.5) else x.ndim)
            kwargs["axes"] = _i32(axes)
        kwargs["keep_dims"] = bool(_chance(rng, 0.5))
        return Case(op, _opset(rng), kwargs, _runtime(rng, "x"))

    return gen


def _factor(rng: np.random.Generator, n: int) -> list[int]:
    """A random shape with ``n`` elements and rank 1..4."""
    dims: list[int] = []
    rest = n
    for _ in range(int(rng.integers(0, 3))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = _pick(rng, divisors)
        dims.append(d)
        rest //= d
    dims.append(rest)
    return [int(d) for d in rng.permutation(dims)]


def gen_reshape(rng: np.random.Generator) -> Case:
    dtype = _pick(rng, DATA_DTYPES)
    x = _values(rng, dtype, _shape(rng))
    shape = _factor(rng, x.size)
    if _chance(rng, 0.3):
        shape[int(rng.integers(len(shape)))] = -1
    if _chance(rng, 0.05):
        shape[int(rng.integers(len(shape)))] = 0
    if _chance(rng, 0.04):
        shape.append(2)
    kwargs = {"x": x, "shape": _i32(shape)}
    return Case("reshape", _opset(rng), kwargs, _runtime(rng, "x", *_live_shape(rng, "shape")))


def gen_transpose(rng: np.random.Generator) -> Case:
    dtype = _pick(rng, DATA_DTYPES)
    x = _values(rng, dtype, _shape(rng, 1))
    perm = [int(p) for p in rng.permutation(x.ndim)]
    perm = [p - x.ndim if _chance(rng, 0.2) else p for p in perm]
    if _chance(rng, 0.04):
        perm[0] = perm[-1] if len(perm) > 1 else x.ndim
    return Case("transpose", _opset(rng), {"x": x, "perm": _i32(perm)}, _runtime(rng, "x"))


def gen_slice_by_size(rng: np.random.Generator) -> Case:
    dtype = _pick(rng, DATA_DTYPES)
    x = _values(rng, dtype, _shape(rng, 1))
    begin, size = [], []
    for dim in x.shape:
        b = int(rng.integers(-dim, 0)) if _chance(rng, 0.25) else int(rng.integers(0, dim))
        start = b + dim if b < 0 else b
        s = -1 if _chance(rng, 0.3) else int(rng.integers(1, dim - start + 1))
        if _chance(rng, 0.03):
            s = _pick(rng, (dim + 1, 0))
        begin.append(b)
        size.append(s)
    kwargs = {"x": x, "begin": _i32(begin), "size": _i32(size)}
    live = _live_shape(rng, "begin", "size")
    return Case("slice_by_size", _opset(rng), kwargs, _runtime(rng, "x", *live))


def _slice_axis(rng: np.random.Generator, d: int, stride: int) -> tuple[int, int]:
    """begin, end for one axis: usually a non-empty slice, in either index form."""
    if _chance(rng, 0.06):
        return int(rng.integers(-d - 1, d + 2)), int(rng.integers(-d - 1, d + 2))
    b = int(rng.integers(0, d))
    if stride > 0:
        e = int(rng.integers(b + 1, d + 2))
        e = e - d if e < d and _chance(rng, 0.3) else e
    else:
        e = int(rng.integers(-1, b))
        e = -d - 1 - int(rng.integers(0, 2)) if e == -1 else e  # -1 alone would mean "last"
    return (b - d if _chance(rng, 0.3) else b), e


def gen_slice_by_index(rng: np.random.Generator) -> Case:
    dtype = _pick(rng, DATA_DTYPES)
    x = _values(rng, dtype, _shape(rng, 1, 4, 5))
    rank = x.ndim
    strides = [_pick(rng, (1, 1, 1, 2, 3, -1, -2)) for _ in range(rank)]
    if _chance(rng, 0.4):
        strides = [1] * rank
    bounds = [_slice_axis(rng, d, s) for d, s in zip(x.shape, strides, strict=True)]
    begin, end = [b for b, _ in bounds], [e for _, e in bounds]
    kwargs: dict[str, Any] = {"x": x, "begin": _i32(begin), "end": _i32(end)}
    if any(s != 1 for s in strides) or _chance(rng, 0.3):
        kwargs["stride"] = _i32(strides)
    for key in ("begin_mask", "end_mask", "squeeze_mask"):
        if _chance(rng, 0.4):
            p = 0.3 if key != "squeeze_mask" else 0.4
            kwargs[key] = rng.random(rank) < p
    if _chance(rng, 0.08):  # squeeze every axis: a scalar result
        kwargs["squeeze_mask"] = np.ones(rank, np.bool_)
    live = _live_shape(rng, "begin", "end")
    return Case("slice_by_index", _opset(rng), kwargs, _runtime(rng, "x", *live))


def gen_concat(rng: np.random.Generator) -> Case:
    dtype = _pick(rng, DATA_DTYPES)
    base = _shape(rng, 1)
    axis = _axis(rng, len(base))
    interleave = _chance(rng, 0.3)
    values = []
    for _ in range(int(rng.integers(1, 5))):
        shape = list(base)
        if not interleave and -len(base) <= axis < len(base) and _chance(rng, 0.5):
            shape[axis] = int(rng.integers(1, 4))
        if _chance(rng, 0.03):
            shape[0] += 1
        values.append(_values(rng, dtype, tuple(shape)))
    kwargs = {"values": values, "axis": np.int32(axis), "interleave": bool(interleave)}
    case = Case("concat", _opset(rng), kwargs, _runtime(rng, "values"))
    if interleave:
        case.reference = "numpy"  # coremltools' value inference ignores interleave
    return case


def gen_matmul(rng: np.random.Generator) -> Case:
    dtype = _float_dtype(rng) if _chance(rng, 0.95) else "int32"
    m, k, n = (int(d) for d in rng.integers(1, 6, size=3))
    batch = _shape(rng, 0, 2, 3)
    xr, yr = (int(r) for r in rng.integers(1, 5, size=2)) if _chance(rng, 0.1) else (4, 4)
    xb = batch[max(0, len(batch) - (xr - 2)) :] if xr > 2 else ()
    yb = tuple(1 if _chance(rng, 0.3) else d for d in batch)[max(0, len(batch) - (yr - 2)) :]
    xs: tuple[int, ...] = (*xb, m, k) if xr >= 2 else (k,)
    ys: tuple[int, ...] = (*yb, k, n) if yr >= 2 else (k,)
    if _chance(rng, 0.05):
        ys = (*ys[:-2], k + 1, n) if len(ys) >= 2 else (k + 1,)
    tx, ty = _chance(rng, 0.5), _chance(rng, 0.5)
    x = _floats(rng, dtype, xs) if dtype in FLOATS else _ints(rng, dtype, xs)
    y = _floats(rng, dtype, ys) if dtype in FLOATS else _ints(rng, dtype, ys)
    if tx and x.ndim >= 2:
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2))
    if ty and y.ndim >= 2:
        y = np.ascontiguousarray(np.swapaxes(y, -1, -2))
    if dtype in FLOATS and _chance(rng, 0.06):  # iOS17+: fine if exactly one is a const
        y = y.astype(NP["fp32" if dtype == "fp16" else "fp16"])
    kwargs = {"x": x, "y": y, "transpose_x": bool(tx), "transpose_y": bool(ty)}
    return Case("matmul", _opset(rng), kwargs, _runtime(rng, "x", "y"))


def gen_conv(rng: np.random.Generator) -> Case:
    dtype = _float_dtype(rng)
    n_sp = _pick(rng, (1, 2, 2))
    groups = _pick(rng, (1, 1, 2, 3))
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    spatial = [int(d) for d in rng.integers(1, 7, size=n_sp)]
    kernel = [int(d) for d in rng.integers(1, 4, size=n_sp)]
    x = _floats(rng, dtype, (int(rng.integers(1, 3)), c_in, *spatial))
    w = _floats(rng, dtype, (c_out, c_in // groups, *kernel), 0.5)
    pad_type = _pick(rng, ("valid", "same", "same_lower", "custom"))
    kwargs: dict[str, Any] = {
        "x": x,
        "weight": w,
        "strides": _i32(rng.integers(1, 3, size=n_sp)),
        "pad_type": pad_type,
        "pad": _i32(rng.integers(0, 3, size=2 * n_sp) if pad_type == "custom" else [0] * 2 * n_sp),
        "dilations": _i32(rng.integers(1, 3, size=n_sp)),
        "groups": np.int32(groups if not _chance(rng, 0.03) else groups + 1),
    }
    if _chance(rng, 0.5):
        kwargs["bias"] = _floats(rng, dtype, (c_out,))
    live = ["x", "weight"] if _chance(rng, 0.2) else ["x"]
    if _chance(rng, 0.05):  # iOS17+ lets weight and bias have the other float dtype
        other = "fp32" if dtype == "fp16" else "fp16"
        for key in ("weight", "bias"):
            if key in kwargs:
                kwargs[key] = kwargs[key].astype(NP[other])
    if "bias" in kwargs and _chance(rng, 0.2):
        live.append("bias")  # a run-time bias needs iOS17+
    case = Case("conv", _opset(rng), kwargs, _runtime(rng, *live))
    case.reference = "numpy"  # coremltools' conv has no value_inference
    return case


def gen_sdpa(rng: np.random.Generator) -> Case:
    dtype = _float_dtype(rng)
    batch = _shape(rng, 1, 2, 3)
    L, S, E, EV = (int(d) for d in rng.integers(1, 6, size=4))
    # no huge specials: scores of 1e9 make softmax ill-conditioned, and coremltools computes
    # it in float64 (its 1/sqrt(E) is a float64 scalar) while the op's contract is float32
    q = _floats(rng, dtype, (*batch, L, E), specials=False)
    k = _floats(rng, dtype, (*batch, S, E), specials=False)
    v = _floats(rng, dtype, (*batch, S, EV))
    kwargs: dict[str, Any] = {"query": q, "key": k, "value": v}
    live = ["query", "key", "value"]
    if _chance(rng, 0.7):
        full = (*batch, L, S)
        shape = full[len(full) - int(rng.integers(1, len(full) + 1)) :]
        shape = tuple(
            1 if _chance(rng, 0.3) and i < len(shape) - 1 else d for i, d in enumerate(shape)
        )
        if _chance(rng, 0.5):
            mask = rng.random(shape) < 0.7
            mask[..., 0] = True  # keep every row attending somewhere (else NaN on both sides)
        else:
            mask = _floats(rng, _pick(rng, FLOATS), shape, 3.0, specials=False)
        if _chance(rng, 0.04):
            mask = mask[..., :-1] if S > 1 else np.concatenate([mask, mask], axis=-1)
        kwargs["attn_mask"] = mask
        if _chance(rng, 0.5):
            live.append("attn_mask")
    return Case("scaled_dot_product_attention", "ios18", kwargs, _runtime(rng, *live))


def _quant_params(
    rng: np.random.Generator, data_shape: tuple[int, ...], scale_dtype: str, zp_dtype: str | None
) -> dict[str, Any]:
    rank = len(data_shape)
    out: dict[str, Any] = {}
    if _chance(rng, 0.5):
        axis = int(rng.integers(-rank, rank))
        n = data_shape[axis]
        out["scale"] = np.asarray(rng.uniform(0.05, 2.0, n), NP[scale_dtype])
        if zp_dtype is not None:
            out["zero_point"] = (
                _ints(rng, zp_dtype, (n,)) // 4
                if zp_dtype != "fp32"
                else (np.asarray(rng.integers(-8, 8, n), np.float32))
            )
        out["axis"] = np.int32(axis)
    else:
        out["scale"] = NP[scale_dtype](rng.uniform(0.05, 2.0))
        if zp_dtype is not None:
            out["zero_point"] = (
                NP[zp_dtype](rng.integers(0, 20)) if zp_dtype != "fp32" else np.float32(3.0)
            )
    return out


def gen_constexpr_affine_dequantize(rng: np.random.Generator) -> Case:
    data_dtype = _pick(rng, ("int8", "uint8"))
    data = _ints(rng, data_dtype, _shape(rng, 1))
    zp_dtype = data_dtype if _chance(rng, 0.5) else _pick(rng, ("int8", "uint8", "fp32"))
    params = _quant_params(rng, data.shape, _float_dtype(rng), zp_dtype)
    if "axis" not in params:
        params["axis"] = np.int32(_axis(rng, data.ndim))
    kwargs = {"quantized_data": data, **params}
    return Case("constexpr_affine_dequantize", _opset(rng), kwargs)


def gen_quantize(rng: np.random.Generator) -> Case:
    dtype = _float_dtype(rng)
    x = _floats(rng, dtype, _shape(rng, 1), 40.0)
    out = _pick(rng, ("int8", "uint8"))
    zp = (
        (out if _chance(rng, 0.9) else _pick(rng, ("int8", "uint8"))) if _chance(rng, 0.7) else None
    )
    scale_dtype = dtype if _chance(rng, 0.95) else _pick(rng, FLOATS)
    kwargs = {"input": x, **_quant_params(rng, x.shape, scale_dtype, zp), "output_dtype": out}
    return Case("quantize", "ios18", kwargs, _runtime(rng, "input"))


def gen_dequantize(rng: np.random.Generator) -> Case:
    data_dtype = _pick(rng, ("int8", "uint8"))
    data = _ints(rng, data_dtype, _shape(rng, 1))
    zp = data_dtype if _chance(rng, 0.7) else None
    kwargs = {"input": data, **_quant_params(rng, data.shape, _float_dtype(rng), zp)}
    return Case("dequantize", "ios18", kwargs, _runtime(rng, "input"))


def gen_cast(rng: np.random.Generator) -> Case:
    opset = _opset(rng)
    sources = (*FLOATS, "int32", "bool") + (("int8", "uint8") if opset == "ios18" else ())
    src = _pick(rng, sources)
    target = _pick(rng, ("fp16", "fp32", "int32", "bool", "int8", "uint8"))
    shape = _shape(rng)
    if src in FLOATS:
        x = _floats(rng, src, shape, 30.0)
        if target in ("int8", "uint8", "int32") and not _chance(rng, 0.1):
            info = np.iinfo(NP[target])
            x = np.clip(np.nan_to_num(x), max(info.min, -65504), min(info.max, 65504))
            x = x.astype(NP[src])
    else:
        x = _ints(rng, src, shape)
        if target in ("int8", "uint8") and src == "int32" and not _chance(rng, 0.1):
            x = np.clip(x, *((-128, 127) if target == "int8" else (0, 255))).astype(np.int32)
    return Case("cast", opset, {"x": x, "dtype": target}, _runtime(rng, "x"))


GENERATORS: dict[str, Generator] = {
    **{op: _binary(op) for op in ("add", "sub", "mul", "real_div", "pow")},
    **{op: _unary(op) for op in ("exp", "sqrt", "sigmoid", "silu", "tanh", "log", "rsqrt")},
    "softmax": gen_softmax,
    **{op: _reduce(op) for op in ("reduce_sum", "reduce_mean", "reduce_max")},
    "reshape": gen_reshape,
    "transpose": gen_transpose,
    "slice_by_size": gen_slice_by_size,
    "slice_by_index": gen_slice_by_index,
    "concat": gen_concat,
    "matmul": gen_matmul,
    "conv": gen_conv,
    "scaled_dot_product_attention": gen_sdpa,
    "constexpr_affine_dequantize": gen_constexpr_affine_dequantize,
    "quantize": gen_quantize,
    "dequantize": gen_dequantize,
    "cast": gen_cast,
}


def draw_case(op: str, seed: int) -> Case:
    """The ``seed``-th random configuration of ``op`` (deterministic)."""
    rng = np.random.default_rng([seed, *op.encode()])
    return GENERATORS[op](rng)
