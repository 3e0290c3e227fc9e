"""Random chains of view-like ops: reshape, transpose, both slices, concat, with adds between.

The simulator turns reshape/transpose/slices into NumPy views of their input's buffer where it
can and copies where it cannot, so a chain mixes views of views, copies of non-contiguous views
and concats of overlapping views: where a planning or aliasing bug would show. Each chain is
built twice with the same steps: on the simulator with its source as a run-time input, and as
constants translated to coremltools (:func:`~anetrain.mil.coreml.to_coreml_program`), whose value
inference gives the reference for every value the chain returns (some intermediates too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anetrain.hardware.chips import ChipProfile
from anetrain.mil import FP16, FP32, Builder, Var
from anetrain.runtime.opcheck.cases import _factor, _slice_axis
from anetrain.runtime.opcheck.oracle import MASK_HONOURING, Outcome, compare, evaluate

# one step: (description, function of the builder and the values so far -> new value)
Step = tuple[str, Callable[[Builder, list[Var]], Var]]


@dataclass
class Chain:
    seed: int
    dtype: str
    source: np.ndarray
    steps: list[Step]
    returned: list[int]  # indices into the values (0 is the source)

    def __str__(self) -> str:
        listing = "; ".join(desc for desc, _ in self.steps)
        return f"chain {self.seed} ({self.dtype}{list(self.source.shape)}): {listing}"


def _i32(values: list[int]) -> np.ndarray:
    return np.asarray(values, np.int32)


def draw_chain(seed: int, length: int = 6) -> Chain:
    """A chain of ``length`` steps, tracking shapes with NumPy stand-ins as it goes."""
    rng = np.random.default_rng([seed, 7])
    dtype = "fp16" if rng.random() < 0.5 else "fp32"
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(2, 5))))
    source = rng.standard_normal(shape).astype(np_dtype)
    shapes: list[tuple[int, ...]] = [shape]
    steps: list[Step] = []
    for _ in range(length):
        cur = len(shapes) - 1
        s = shapes[cur]
        kind = ["reshape", "transpose", "slice_by_size", "slice_by_index", "concat", "add"][
            int(rng.integers(6))
        ]
        stand_in = np.empty(s)
        if kind == "reshape":
            new = _factor(rng, int(np.prod(s)))
            steps.append((f"reshape{new}", _reshape(cur, new)))
            shapes.append(tuple(new))
        elif kind == "transpose":
            perm = [int(p) for p in rng.permutation(len(s))]
            steps.append((f"transpose{perm}", _transpose(cur, perm)))
            shapes.append(stand_in.transpose(perm).shape)
        elif kind == "slice_by_size":
            begin = [int(rng.integers(0, d)) for d in s]
            size = [int(rng.integers(1, d - b + 1)) for b, d in zip(begin, s, strict=True)]
            steps.append((f"slice_by_size{begin},{size}", _slice_by_size(cur, begin, size)))
            shapes.append(tuple(size))
        elif kind == "slice_by_index":
            stride = [int(rng.choice([1, 1, 2, -1])) for _ in s]
            bounds = [_nonempty(rng, d, st) for d, st in zip(s, stride, strict=True)]
            begin, end = [b for b, _ in bounds], [e for _, e in bounds]
            # "to the start" as end_mask: coremltools mis-clamps an end below -dim (documented)
            to_start = [st < 0 and e < -d for st, e, d in zip(stride, end, s, strict=True)]
            sl = tuple(
                slice(b, None if m else e, st)
                for b, e, st, m in zip(begin, end, stride, to_start, strict=True)
            )
            steps.append(
                (
                    f"slice_by_index{begin},{end},{stride},end_mask={to_start}",
                    _slice(cur, begin, end, stride, to_start),
                )
            )
            shapes.append(stand_in[sl].shape)
        elif kind == "concat":
            axis = int(rng.integers(len(s)))
            partners = [
                i
                for i, t in enumerate(shapes)
                if len(t) == len(s)
                and all(a == b for j, (a, b) in enumerate(zip(t, s, strict=True)) if j != axis)
            ]
            picks = [cur, *(int(rng.choice(partners)) for _ in range(int(rng.integers(1, 3))))]
            steps.append((f"concat{picks} axis {axis}", _concat(picks, axis)))
            out = list(s)
            out[axis] = sum(shapes[i][axis] for i in picks)
            shapes.append(tuple(out))
        else:
            same = [i for i, t in enumerate(shapes) if t == s]
            other = int(rng.choice(same))
            steps.append((f"add %{cur} %{other}", _add(cur, other)))
            shapes.append(s)
    n = len(shapes)
    picked = rng.choice(np.arange(1, n), size=min(2, n - 1), replace=False)
    returned = sorted({n - 1, *(int(i) for i in picked)})
    return Chain(seed, dtype, source, steps, returned)


def _nonempty(rng: np.random.Generator, d: int, stride: int) -> tuple[int, int]:
    while True:
        b, e = _slice_axis(rng, d, stride)
        if len(range(*slice(b, e, stride).indices(d))):
            return b, e


def _reshape(i: int, shape: list[int]) -> Callable[[Builder, list[Var]], Var]:
    return lambda b, v: b.reshape(v[i], _i32(shape))


def _transpose(i: int, perm: list[int]) -> Callable[[Builder, list[Var]], Var]:
    return lambda b, v: b.transpose(v[i], _i32(perm))


def _slice_by_size(
    i: int, begin: list[int], size: list[int]
) -> Callable[[Builder, list[Var]], Var]:
    return lambda b, v: b.slice_by_size(v[i], _i32(begin), _i32(size))


def _slice(
    i: int, begin: list[int], end: list[int], stride: list[int], end_mask: list[bool]
) -> Callable[[Builder, list[Var]], Var]:
    return lambda b, v: b.slice_by_index(
        v[i], _i32(begin), _i32(end), _i32(stride), end_mask=np.asarray(end_mask)
    )


def _concat(picks: list[int], axis: int) -> Callable[[Builder, list[Var]], Var]:
    return lambda b, v: b.concat([v[i] for i in picks], np.int32(axis))


def _add(i: int, j: int) -> Callable[[Builder, list[Var]], Var]:
    return lambda b, v: b.add(v[i], v[j])


def _build(chain: Chain, as_input: bool) -> Builder:
    b = Builder("ios18")
    dtype = FP16 if chain.dtype == "fp16" else FP32
    src = (
        b.input("x", dtype, chain.source.shape)
        if as_input
        else b.const(chain.source, name="x", dtype=dtype)
    )
    values = [src]
    for _, make in chain.steps:
        values.append(make(b, values))
    b.returns(*(values[i] for i in chain.returned))
    return b


def check_chain(seed: int, chip: ChipProfile = MASK_HONOURING) -> Outcome:
    """Run chain ``seed`` on the simulator and through coremltools; compare every output."""
    from anetrain.mil.coreml import to_coreml_program

    chain = draw_chain(seed)
    ours = evaluate(_build(chain, as_input=True).function, [chain.source], chip)
    reference = _build(chain, as_input=False)
    prog = to_coreml_program(reference.program())
    table = {v.name: v for op in prog.functions["main"].operations for v in op.outputs}
    for got, var in zip(ours, reference.function.outputs, strict=True):
        want = table[var.name].val
        if want is None:
            return Outcome(chain, "disagree", f"coremltools gave no value for %{var.name}")
        problem = compare("add", got, np.asarray(want), fp16=chain.dtype == "fp16")
        if problem:
            return Outcome(chain, "disagree", f"%{var.name}: {problem}")
    return Outcome(chain, "agree")
