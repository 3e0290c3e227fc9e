"""Run a :class:`Case` on the simulator and through coremltools, and judge the two results.

The simulator side builds the op with our :class:`Builder` (so our registry's type rules apply),
plans it with the real planners and evaluates twice: first with decoy inputs, then with the
case's inputs, so a value frozen at compile time or a stale buffer shows up. The reference side
is coremltools' value inference for the same call (``mb.<op>(**kwargs)`` on constants), or a
float64 NumPy reference following coremltools' documented rules where it has none. fp16 cases
are compared with the fp32 reference rounded once to fp16: coremltools evaluates the fp32 twin of
the call (fp16 arguments and the defaults it materialized for the fp16 call, upcast exactly).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from anetrain.errors import AnetrainError
from anetrain.hardware.chips import ChipProfile, get_chip
from anetrain.mil import Builder, Function
from anetrain.mil.types import FP16, DType
from anetrain.runtime.opcheck.cases import Case
from anetrain.runtime.opcheck.differences import Difference, explain
from anetrain.runtime.sim.plan import build_plan
from anetrain.runtime.sim.weights import WeightResolver

# A profile that honours attn_mask (the default profiles ignore it, as the hardware does), so
# that SDPA's mask semantics are compared too; the ignored mask is tested on its own.
MASK_HONOURING = dataclasses.replace(get_chip("m4"), sdpa_ignores_mask=False)

ACCUMULATING = frozenset(
    {"matmul", "conv", "reduce_sum", "reduce_mean", "softmax", "scaled_dot_product_attention"}
)


@dataclass(frozen=True)
class Rejected:
    """One side refused the call; ``message`` is its error."""

    message: str


@dataclass
class Outcome:
    """The verdict on one case: ``agree``, ``both_reject``, ``documented`` or ``disagree``."""

    case: Any  # a Case, or a chains.Chain
    verdict: str
    detail: str = ""
    difference: Difference | None = None

    @property
    def ok(self) -> bool:
        return self.verdict != "disagree"

    def __str__(self) -> str:
        why = f" [{self.difference.key}]" if self.difference else ""
        return f"{self.verdict}{why}: {self.case}: {self.detail}"


# --------------------------------------------------------------------------------------------
# the simulator side


def _decoy(value: np.ndarray) -> np.ndarray:
    """Other values of the same dtype and shape (to catch results frozen at compile time)."""
    if value.dtype == np.bool_:
        return ~value
    if value.dtype.kind in "iu":
        return np.invert(value)
    with np.errstate(over="ignore"):
        return (value.astype(np.float32) * -1.5 + 0.25).astype(value.dtype)


def run_sim(case: Case, chip: ChipProfile = MASK_HONOURING) -> np.ndarray | Rejected:
    b = Builder(case.opset)
    kwargs: dict[str, Any] = {}
    feeds: list[np.ndarray] = []
    for name, value in case.kwargs.items():
        if name not in case.runtime:
            kwargs[name] = value
            continue
        items = value if isinstance(value, list) else [value]
        made = []
        for i, item in enumerate(items):
            arr = np.asarray(item)
            label = f"{name}{i}" if isinstance(value, list) else name
            made.append(b.input(label, DType.from_numpy(arr.dtype), arr.shape))
            feeds.append(arr)
        kwargs[name] = made if isinstance(value, list) else made[0]
    try:
        b.returns(getattr(b, case.op)(**kwargs))
        (result,) = evaluate(b.function, feeds, chip)
    except AnetrainError as err:
        return Rejected(str(err))
    return result


def evaluate(fn: Function, feeds: list[np.ndarray], chip: ChipProfile) -> list[np.ndarray]:
    """Plan ``fn`` and evaluate it twice, decoy inputs first, then ``feeds``; its outputs
    (fp16 ones as float16 arrays)."""
    plan = build_plan(fn, chip, WeightResolver({}, chip), flush_subnormals=False)
    for data in ([_decoy(f) for f in feeds], feeds):
        for buf, arr in zip(plan.inputs, data, strict=True):
            np.copyto(buf, arr, casting="unsafe")
        with np.errstate(all="ignore"):
            for step in plan.steps:
                step()
    return [
        np.array(value).astype(np.float16) if var.dtype is FP16 else np.array(value)
        for var, value in zip(fn.outputs, plan.outputs, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# the coremltools side


def _ct_arg(value: Any) -> Any:
    """A case argument as coremltools' builder wants it (scalars as NumPy/Python scalars)."""
    if isinstance(value, list):
        return [_ct_arg(v) for v in value]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.copy()  # coremltools' slice helpers write into their arguments
    return value


@dataclass
class Theirs:
    value: np.ndarray | None
    type_shape: tuple[int, ...] | None  # coremltools' *type* inference (may contradict value)
    defaults: dict[str, Any]  # inputs coremltools materialized that the call did not give


def _placeholders(call: dict[str, Any], live: tuple[str, ...]) -> dict[str, Any]:
    """coremltools function inputs for the run-time arguments (one per variadic item)."""
    from coremltools.converters.mil.mil import Builder as mb

    from anetrain.mil.coreml import coreml_types

    ctypes = coreml_types()
    specs = {}
    for name in live:
        value = call[name]
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            arr = np.asarray(item)
            specs[f"{name}_{i}"] = mb.placeholder(
                shape=arr.shape,
                dtype=ctypes[DType.from_numpy(arr.dtype)],
                allow_rank0_input=not arr.shape,
            )
    return specs


def run_coreml(
    case: Case, kwargs: dict[str, Any] | None = None, live: tuple[str, ...] = ()
) -> Theirs | Rejected:
    """coremltools' verdict on the call, and its value when every argument is a constant;
    ``live`` arguments become function inputs instead (for its const-ness rules)."""
    import coremltools as ct  # noqa: F401  (fails fast with a clear ImportError)
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, types

    from anetrain.mil.coreml import coreml_target

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    call = case.kwargs if kwargs is None else kwargs
    target = coreml_target(case.opset)
    try:
        fn = Function(_placeholders(call, live), opset_version=target)
    except Exception as err:
        return Rejected(f"{type(err).__name__}: {err}")
    with fn, np.errstate(all="ignore"):
        args = {k: _ct_arg(v) for k, v in call.items()}
        for name in live:
            if isinstance(call[name], list):
                args[name] = [fn.inputs[f"{name}_{i}"] for i in range(len(call[name]))]
            else:
                args[name] = fn.inputs[f"{name}_0"]
        try:
            var = getattr(mb, case.op)(**args)
        except Exception as err:  # coremltools raises ValueError/TypeError/AssertionError/...
            return Rejected(f"{type(err).__name__}: {err}")
        value = var.val
        if value is None and hasattr(var.op, "materialized_val_inference"):
            value = var.op.materialized_val_inference()
        dims = var.shape if types.is_tensor(var.sym_type) else ()
        static = all(isinstance(d, int | np.integer) for d in dims)
        shape = tuple(int(d) for d in dims) if static else None  # None: symbolic
        defaults = {
            k: v.val
            for k, v in var.op.inputs.items()
            if k not in call and not isinstance(v, list | tuple) and v.val is not None
        }
    return Theirs(None if value is None else np.asarray(value), shape, defaults)


# --------------------------------------------------------------------------------------------
# float64 references where coremltools has none


def _silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)`` as ``x / (1 + exp(-x))``, with silu(-inf) its limit -0.0 (what every
    large finite negative input gives) rather than IEEE's -inf / inf = NaN: -inf is clamped to
    the most negative float64 first (NaN stays NaN; exp's overflow to inf is the intent)."""
    x64 = np.maximum(x.astype(np.float64), np.finfo(np.float64).min)
    with np.errstate(over="ignore"):
        return x64 / (1.0 + np.exp(-x64))


def _interleave(values: list[np.ndarray], axis: int) -> np.ndarray:
    """coremltools' documented interleave: ``out[..., i*n + j, ...] = values[j][..., i, ...]``."""
    stacked = np.stack(values, axis=axis % values[0].ndim + 1)
    shape = list(values[0].shape)
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def conv_pads(kwargs: dict[str, Any]) -> list[tuple[int, int]]:
    """Padding per spatial axis by coremltools' conv documentation (valid/same/same_lower/custom):
    ``same`` pads ``max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0)`` with the extra element at the
    end, ``same_lower`` at the start."""
    x, w = kwargs["x"], kwargs["weight"]
    pad_type = kwargs["pad_type"]
    out = []
    for i, (n, k) in enumerate(zip(x.shape[2:], w.shape[2:], strict=True)):
        s, d = int(kwargs["strides"][i]), int(kwargs["dilations"][i])
        if pad_type == "custom":
            out.append((int(kwargs["pad"][2 * i]), int(kwargs["pad"][2 * i + 1])))
        elif pad_type in ("same", "same_lower"):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        else:
            out.append((0, 0))
    return out


def _conv(kwargs: dict[str, Any]) -> np.ndarray:
    x = kwargs["x"].astype(np.float64)
    w = kwargs["weight"].astype(np.float64)
    groups = int(kwargs["groups"])
    pads = conv_pads(kwargs)
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    strides = [int(s) for s in kwargs["strides"]]
    dil = [int(d) for d in kwargs["dilations"]]
    kernel = w.shape[2:]
    out_sp = [
        (n - (k - 1) * d - 1) // s + 1
        for n, k, d, s in zip(xp.shape[2:], kernel, dil, strides, strict=True)
    ]
    batch, c_in = x.shape[:2]
    c_out = w.shape[0]
    cig, cog = c_in // groups, c_out // groups
    out = np.zeros((batch, c_out, *out_sp))
    for g in range(groups):
        xg = xp[:, g * cig : (g + 1) * cig]
        wg = w[g * cog : (g + 1) * cog]
        for offset in itertools.product(*(range(k) for k in kernel)):
            sl = tuple(
                slice(o * d, o * d + (m - 1) * s + 1, s)
                for o, d, s, m in zip(offset, dil, strides, out_sp, strict=True)
            )
            patch = xg[(slice(None), slice(None), *sl)]  # [N, cig, *out]
            tap = wg[(slice(None), slice(None), *offset)]  # [cog, cig]
            out[:, g * cog : (g + 1) * cog] += np.einsum("oc,nc...->no...", tap, patch)
    if "bias" in kwargs:
        out += kwargs["bias"].astype(np.float64).reshape(1, c_out, *([1] * len(kernel)))
    return out


def numpy_reference(case: Case, kwargs: dict[str, Any]) -> np.ndarray:
    if case.op == "silu":
        return _silu(kwargs["x"])
    if case.op == "concat":
        return _interleave(kwargs["values"], int(kwargs["axis"]))
    if case.op == "conv":
        return _conv(kwargs)
    raise KeyError(f"no NumPy reference for {case.op}")


# --------------------------------------------------------------------------------------------
# comparison


def _upcast(value: Any) -> Any:
    if isinstance(value, list):
        return [_upcast(v) for v in value]
    if isinstance(value, np.ndarray | np.generic) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in fp16 units in the last place (on the ordered bit patterns)."""

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.astype(np.float16).view(np.int16).astype(np.int32)
        return np.where(bits < 0, -32768 - bits, bits)

    return np.abs(ordered(a) - ordered(b))


def compare(op: str, ours: np.ndarray, ref: np.ndarray, fp16: bool) -> str | None:
    """None if ``ours`` matches ``ref``, else what differs (first offending element)."""
    if ours.shape != ref.shape:
        return f"shape: ours {list(ours.shape)}, reference {list(ref.shape)}"
    if ours.dtype.kind not in "f":
        bad = ours != ref.astype(ours.dtype)
        if not bad.any():
            return None
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        return f"at {list(i)}: ours {ours[i]}, reference {ref[i]}"
    got = ours.astype(np.float64)
    with np.errstate(over="ignore"):  # a float64 reference beyond the storage range is +-inf
        want = ref.astype(np.float16 if fp16 else np.float32).astype(np.float64)
    nan = np.isnan(got) | np.isnan(want)
    finite = np.isfinite(want)
    scale = float(np.max(np.abs(want[finite]), initial=1.0))
    accumulating = op in ACCUMULATING
    with np.errstate(invalid="ignore"):
        err = np.abs(got - want)
        if fp16:
            ok = _ulps(got, want) <= (2 if accumulating else 1)
            if accumulating:
                ok |= err <= 1e-5 * scale
        else:
            rtol = 1e-5 if accumulating else 1e-6
            ok = err <= rtol * np.abs(want) + (1e-6 * scale if accumulating else 1e-38)
        ok |= got == want
        ok &= np.isnan(got) == np.isnan(want)
        ok |= nan & np.isnan(got) & np.isnan(want)
    if ok.all():
        return None
    i = tuple(int(j) for j in np.argwhere(~ok)[0])
    return f"at {list(i)}: ours {got[i]!r}, reference {want[i]!r} ({int((~ok).sum())} elements)"


def _reference(case: Case) -> tuple[np.ndarray | None, Theirs | Rejected]:
    """The reference value (None if none) and coremltools' verdict on the call as given
    (run-time arguments as function inputs, so const-only parameters are checked too)."""
    verdict = run_coreml(case, live=case.runtime) if case.runtime else None
    if isinstance(verdict, Rejected):
        return None, verdict
    fp16 = _has_fp16(case.kwargs)
    theirs = run_coreml(case)
    if isinstance(theirs, Rejected):
        # accepted with run-time arguments but not as all constants (e.g. a matmul whose
        # operands differ in dtype): the fp32 twin, all constants, gives the value
        if verdict is None or not fp16:
            return None, theirs
        theirs = dataclasses.replace(verdict, value=None)
    if not fp16 and case.reference == "coremltools":
        return theirs.value, theirs
    twin = {k: _upcast(v) for k, v in case.kwargs.items()}
    twin.update({k: _upcast(v) for k, v in theirs.defaults.items()} if fp16 else {})
    if case.reference == "numpy":
        return numpy_reference(case, twin), theirs
    fp32 = run_coreml(case, twin)
    if isinstance(fp32, Rejected):  # its value inference fails where its type inference did not
        return None, Rejected(f"(fp32 value) {fp32.message}")
    return fp32.value, theirs


def _has_fp16(kwargs: dict[str, Any]) -> bool:
    return any(
        isinstance(v, np.ndarray | np.generic) and v.dtype == np.float16
        for value in kwargs.values()
        for v in (value if isinstance(value, list) else [value])
    )


def check_case(case: Case, chip: ChipProfile = MASK_HONOURING) -> Outcome:
    """Run ``case`` on both sides and judge: acceptance, then shape, then values."""
    ours = run_sim(case, chip)
    ref, theirs = _reference(case)
    if isinstance(ours, Rejected) and isinstance(theirs, Rejected):
        return Outcome(case, "both_reject", f"ours: {ours.message} | theirs: {theirs.message}")
    if isinstance(ours, Rejected) or isinstance(theirs, Rejected):
        side = "ours_rejects" if isinstance(ours, Rejected) else "theirs_rejects"
        message = ours.message if isinstance(ours, Rejected) else theirs.message  # type: ignore[union-attr]
        diff = explain(side, case, message)
        verdict = "documented" if diff else "disagree"
        return Outcome(case, verdict, f"{side.replace('_', ' ')}: {message}", diff)
    assert isinstance(theirs, Theirs)
    if ref is None:
        return Outcome(case, "disagree", "coremltools accepted the call but gave no value")
    ref = np.asarray(ref)
    problem = compare(case.op, ours, ref, fp16=ours.dtype == np.float16)
    if theirs.type_shape is not None and theirs.type_shape != ref.shape:
        # coremltools contradicts itself: its type inference and its value inference differ
        diff = explain("coremltools_contradiction", case, "")
        detail = (
            f"coremltools type {list(theirs.type_shape)} vs its value {list(ref.shape)}; "
            f"ours {list(ours.shape)}" + (f"; {problem}" if problem else "")
        )
        return Outcome(case, "documented" if diff and not problem else "disagree", detail, diff)
    if problem is None:
        return Outcome(case, "agree")
    diff = explain("values", case, problem)
    return Outcome(case, "documented" if diff else "disagree", problem, diff)


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        key = o.verdict if o.difference is None else f"{o.verdict}:{o.difference.key}"
        counts[key] = counts.get(key, 0) + 1
    return counts
