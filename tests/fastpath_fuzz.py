"""Differential fuzzing of the simulator's fast path (numba) against its NumPy reference path.

:func:`fuzz_fast_path` draws random valid programs over every op the simulator plans
(``mil_strategies.programs``), inputs full of awkward values (fp16 subnormals, +-0, +-inf,
NaNs with several payloads and signs, values around fp16's overflow boundary 65504/65520,
fp32 subnormals), and the flush-subnormals option, then compares the outputs byte for byte:
the NumPy path with one buffer per value (the reference) against the NumPy path with buffer
reuse, the fast path, the fast path with garbage in its transient buffers between evals, and
both paths through a compiled kernel (surfaces in and out) when the chip accepts the program.
The contract (docs/runtime.md) is the same bytes, NaN payloads included, except which NaN
survives an add or mul of two NaNs: NumPy's own loops pick differently by array size (NumPy
2.4 on x86: ``vector + scalar`` returns the vector's NaN up to 16 elements and the scalar's
beyond), so those are counted apart (``nan_payloads``), not as mismatches. The test suite runs
a few hundred cases; ``scripts/fuzz_fastpath.py`` runs thousands.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.mil import FP16, DType, Function, Literal, Program
from anetrain.mil.blob import blob_bytes
from anetrain.runtime.sim import SimBackend
from anetrain.runtime.sim.buffers import Workspace
from anetrain.runtime.sim.plan import build_plan
from anetrain.runtime.sim.weights import WeightResolver
from mil_strategies import BuiltProgram, float_values, programs

# the mask honoured, so scaled_dot_product_attention runs its mask path too
CHIP = dataclasses.replace(
    runtime.get_chip("m4"), multi_input_allowed=True, sdpa_ignores_mask=False
)

_NAN_BITS = [0x7FC00000, 0xFFC00000, 0x7FC00001, 0xFFD00ABC, 0x7F800001, 0x7FFFE000]
NANS32 = np.array(_NAN_BITS, np.uint32).view(np.float32)  # quiet and signalling, both signs
NANS16 = np.array([0x7E00, 0xFE00, 0x7C01, 0x7E3F, 0xFD00], np.uint16).view(np.float16)
EDGES32 = [65504.0, 65505.0, 65519.99, 65520.0, -65520.0, 65536.0, 1e-40, -1e-45, 2.0**-25]


def input_arrays(dtype: DType, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """float32 arrays of fp16 (or fp32) values with NaN payloads and boundary values mixed in."""
    npt = dtype.numpy
    nans = NANS16 if dtype is FP16 else NANS32
    extra = [float(npt.type(v)) for v in EDGES32] if dtype is not FP16 else []
    elements = st.one_of(float_values(dtype), st.sampled_from(extra or [0.0]))
    base = hnp.arrays(npt, shape, elements=elements, fill=elements)

    @st.composite
    def with_nans(draw) -> np.ndarray:
        arr = np.array(draw(base), copy=True)
        flat = arr.reshape(-1)
        for i in draw(st.lists(st.integers(0, max(flat.size - 1, 0)), max_size=3)):
            if flat.size:
                flat[i] = nans[draw(st.integers(0, len(nans) - 1))]
        return arr.astype(np.float32)  # fp16 -> float32 keeps NaN payloads (shifted)

    return with_nans()


def weight_files(fn: Function) -> st.SearchStrategy[dict[str, bytes]]:
    """Blob files for the program's BLOBFILE weights: every file holds every weight in the
    order the program declares them (``programs`` numbers their offsets across files)."""
    by_offset = {
        lit.blob.offset: (lit.blob.path, lit.type.dtype, tuple(lit.type.shape))
        for op in fn.operations
        for lit in op.attributes.values()
        if isinstance(lit, Literal) and lit.blob is not None
    }  # a quantized weight's data is referenced twice (its const and its constexpr op)
    return _weight_files(tuple(sorted(by_offset.items())))


@st.composite
def _weight_files(draw, refs: tuple) -> dict[str, bytes]:
    arrays = []
    for _, (_, dtype, shape) in refs:
        if dtype.is_float:
            arrays.append(draw(input_arrays(dtype, shape)).astype(dtype.numpy))
        else:
            info = np.iinfo(dtype.numpy)
            ints = st.integers(int(info.min), int(info.max))
            arrays.append(draw(hnp.arrays(dtype.numpy, shape, elements=ints)))
    data, offsets = blob_bytes(arrays)
    assert offsets == [offset for offset, _ in refs], "programs() lays weights out so"
    return {path: data for path in {path for _, (path, _, _) in refs}}


def run_plan(
    fn: Function,
    inputs: list[np.ndarray],
    weights: dict[str, bytes],
    *,
    fast: bool,
    ftz: bool,
    reuse: bool = True,
    garbage: bool = False,
) -> list[np.ndarray]:
    """Two evals of ``fn``'s plan; the second eval's outputs. ``garbage``: NaN bit patterns
    fill the plan's transient buffers between the evals (what other kernels leave there)."""
    plan = build_plan(
        fn,
        CHIP,
        WeightResolver(weights, CHIP),
        flush_subnormals=ftz,
        fast=fast,
        reuse_buffers=reuse,
        workspace=Workspace() if garbage else None,
    )
    with np.errstate(all="ignore"):
        for n in range(2):
            if garbage and n:
                for buf in plan.transient:
                    buf.reshape(-1).view(np.uint8)[...] = 0xFF
            for buf, x in zip(plan.inputs, inputs, strict=True):
                buf[...] = x
            for step in plan.steps:
                step()
    return [np.array(o, copy=True) for o in plan.outputs]


def run_kernel(
    program: Program, inputs: list[np.ndarray], weights: dict[str, bytes], *, fast: bool, ftz: bool
) -> list[np.ndarray]:
    """A compiled kernel's outputs (inputs written through surfaces), flattened: those of an
    eval on its own surfaces, then of a request that gives every other output a surface of
    its own (the default surfaces of those must keep the first eval's values)."""
    backend = SimBackend(CHIP, fast=fast, flush_subnormals=ftz)
    kernel = runtime.compile(program, weights, backend=backend)
    try:
        first = kernel(*inputs)
        first = [o.copy() for o in (first if isinstance(first, tuple) else [first])]
        mine = {i: kernel.new_surface(spec) for i, spec in enumerate(kernel.output_specs) if i % 2}
        outs = [mine.get(i, s) for i, s in enumerate(kernel.outputs)]
        kernel.request(*kernel.inputs, outputs=outs).eval()
        second = [s.numpy() for s in outs]
        kept = [kernel.outputs[i].numpy() for i in mine]
        return [a.reshape(-1) for a in (*first, *second, *kept)]
    finally:
        kernel.unload()


def differences(
    a: list[np.ndarray], b: list[np.ndarray], *, nan_payloads: bool = True
) -> str | None:
    """None when ``a`` and ``b`` hold the same bytes, else the first difference;
    ``nan_payloads=False``: a NaN where the other holds another NaN is no difference."""
    if len(a) != len(b):
        return f"{len(a)} outputs vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"output {i}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}"
        if x.dtype == object:
            if x.tolist() != y.tolist():
                return f"output {i}: strings differ"
            continue
        xb = np.ascontiguousarray(x).reshape(-1).view(np.uint8).reshape(x.size, -1)
        yb = np.ascontiguousarray(y).reshape(-1).view(np.uint8).reshape(y.size, -1)
        differ = (xb != yb).any(axis=1)
        if not nan_payloads and x.dtype.kind == "f":
            differ &= ~(np.isnan(x.reshape(-1)) & np.isnan(y.reshape(-1)))
        bad = np.flatnonzero(differ)
        if bad.size:
            j = bad[0]
            xv, yv = x.reshape(-1)[j], y.reshape(-1)[j]
            bits = ""
            if x.dtype == np.float32:
                bits = f" (0x{xv.view(np.uint32):08x} vs 0x{yv.view(np.uint32):08x})"
            return f"output {i}: {bad.size} elements differ, first at {j}: {xv!r} vs {yv!r}{bits}"
    return None


@dataclass
class FastTally:
    programs: int = 0  # compared on the plan level
    kernels: int = 0  # also compiled (the chip accepted the program) and compared
    skipped: int = 0  # refused by the NumPy path itself (typed error): nothing to compare
    ops: dict[str, int] = field(default_factory=dict)
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # (program, what)
    nan_payloads: list[tuple[str, str]] = field(default_factory=list)  # NaN vs other NaN only
    escapes: list[tuple[str, str]] = field(default_factory=list)  # (program, traceback)

    def summary(self) -> str:
        return (
            f"{self.programs} programs ({sum(self.ops.values())} ops, {len(self.ops)} op types)"
            f", {self.kernels} also compiled; {self.skipped} refused; "
            f"{len(self.mismatches)} mismatches, {len(self.nan_payloads)} with only NaN "
            f"payloads differing, {len(self.escapes)} escaped"
        )


def compare(
    built: BuiltProgram,
    inputs: list[np.ndarray],
    weights: dict[str, bytes],
    ftz: bool,
    tally: FastTally,
) -> None:
    """Every variant of both paths against the NumPy path with one buffer per value."""
    fn, w = built.program.main, weights
    try:
        ref = run_plan(fn, inputs, w, fast=False, ftz=ftz, reuse=False)
    except AnetrainError:
        tally.skipped += 1
        return
    tally.programs += 1
    for op_type in built.op_types:
        tally.ops[op_type] = tally.ops.get(op_type, 0) + 1
    variants = {
        "numpy, reused buffers": lambda: run_plan(fn, inputs, w, fast=False, ftz=ftz),
        "fast": lambda: run_plan(fn, inputs, w, fast=True, ftz=ftz),
        "fast, one buffer per value": lambda: run_plan(
            fn, inputs, w, fast=True, ftz=ftz, reuse=False
        ),
        "fast, garbage between evals": lambda: run_plan(
            fn, inputs, w, fast=True, ftz=ftz, garbage=True
        ),
    }
    for name, run in variants.items():
        _record(tally, built, f"{name} (ftz={ftz})", ref, run())
    try:
        kernel_ref = run_kernel(built.program, inputs, w, fast=False, ftz=ftz)
    except AnetrainError:
        return  # the chip refuses it (rank, sizes): plan-level only
    tally.kernels += 1
    got = run_kernel(built.program, inputs, w, fast=True, ftz=ftz)
    _record(tally, built, f"kernel (ftz={ftz})", kernel_ref, got)
    n = len(ref)  # the plan's values are what the surfaces must show, twice over
    plan_twice = [np.asarray(a, np.float32).reshape(-1) for a in ref] * 2
    _record(tally, built, f"kernel vs plan (ftz={ftz})", plan_twice, kernel_ref[: 2 * n])


def _record(tally: FastTally, built: BuiltProgram, what: str, ref: list, got: list) -> None:
    diff = differences(ref, got)
    if diff is None:
        return
    real = differences(ref, got, nan_payloads=False)
    kept = tally.mismatches if real else tally.nan_payloads
    kept.append((repr(built), f"{what}: {real or diff}"))


ELEMENTWISE_KINDS = ("elementwise", "unary", "reshape", "transpose", "concat", "slice_by_size")


def fuzz_fast_path(
    cases: int, seed_value: int = 0, max_ops: int = 8, kinds: tuple[str, ...] | None = None
) -> FastTally:
    """Compare ``cases`` random programs on both paths (seeded: the same run each time);
    ``kinds``: only these op generators (``ELEMENTWISE_KINDS``: chains of element-wise ops
    and the views between them, where the fast path's fused kernels and buffer reuse meet)."""
    tally = FastTally()

    @seed(seed_value)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        built = data.draw(programs("ios18", max_ops=max_ops, kinds=kinds), label="program")
        fn = built.program.main
        inputs = [data.draw(input_arrays(v.dtype, v.shape), label=v.name) for v in fn.inputs]
        weights = data.draw(weight_files(fn), label="weights")
        ftz = data.draw(st.booleans(), label="ftz")
        try:
            compare(built, inputs, weights, ftz, tally)
        except Exception:
            tally.escapes.append((repr(built), traceback.format_exc(limit=8)))

    one()
    return tally
