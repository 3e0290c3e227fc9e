"""Choosing the simulator's execution path, and the fast path's planning helpers.

Two paths give bit-identical results (``tests/test_runtime_sim_fastpath.py`` runs every op and
the training step through both; NaN payloads too, except which NaN an add or mul of two NaNs
returns, which NumPy's own loops vary by array size: docs/runtime.md): the NumPy path, the
reference, which rounds each fp16 op output in a separate multi-pass NumPy routine
(:func:`anetrain.runtime.fp16.round_fp16`), and the fast path, numba kernels
(:mod:`anetrain.runtime.sim.jit`, the optional ``fast`` extra) that do an
op's exact arithmetic and its rounding in one pass, and round other ops' outputs in place.

``SimBackend(fast=None)`` takes the fast path when numba imports, unless the environment
variable ``ANETRAIN_SIM_FAST`` is ``0`` (``1`` makes numba required); ``fast=True`` requires it
and ``fast=False`` selects the NumPy path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from types import ModuleType

import numpy as np

from anetrain.runtime.errors import BackendUnavailable

ENV_VAR = "ANETRAIN_SIM_FAST"
_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}

Step = Callable[[], None]


@cache
def _load() -> tuple[ModuleType | None, str]:
    try:
        from anetrain.runtime.sim import jit
    except ImportError as err:
        return None, f"numba is not importable ({err}); pip install 'anetrain[fast]'"
    return jit, ""


def fast_available() -> tuple[bool, str]:
    """Whether the fast path can run here, and why not."""
    module, reason = _load()
    return module is not None, reason


def resolve_fast(fast: bool | None) -> bool:
    """The path a backend takes for ``fast`` (None: the environment variable, else numba's
    presence); raises :class:`BackendUnavailable` when the fast path is required but missing
    or the variable holds something else."""
    if fast is None:
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env in _OFF:
            return False
        if env and env not in _ON:
            raise BackendUnavailable(
                f"environment variable {ENV_VAR}={env!r} is not a choice: set it to 1 (fast "
                "path required), 0 (NumPy path), or unset it (fast path when numba imports)"
            )
        if not env:
            return fast_available()[0]
        fast = True
    ok, reason = fast_available()
    if fast and not ok:
        raise BackendUnavailable(f"sim fast path requested but unavailable: {reason}")
    return fast


def collapse_2d(
    shape: tuple[int, ...], arrays: list[np.ndarray]
) -> tuple[list[np.ndarray], tuple[int, int]] | None:
    """``[outer, inner]`` views of ``arrays`` broadcast to ``shape``, each full or of extent 1
    along each axis, or None when the broadcast needs more than two axes or an array is not
    C-contiguous. Adjacent axes over which every array is either full or broadcast merge."""
    n = len(shape)
    if any(a.ndim > n or not a.flags.c_contiguous or a.dtype != np.float32 for a in arrays):
        return None
    if 0 in shape:
        return None
    padded = [(1,) * (n - a.ndim) + a.shape for a in arrays]
    groups: list[list] = []  # [extent, which arrays are full along it]
    for d, size in enumerate(shape):
        if size == 1:
            continue
        full = tuple(p[d] == size for p in padded)
        if groups and groups[-1][1] == full:
            groups[-1][0] *= size
        else:
            groups.append([size, full])
    if len(groups) > 2:
        return None
    while len(groups) < 2:
        groups.insert(0, [1, (True,) * len(arrays)])
    (n0, full0), (n1, full1) = groups
    views = [a.reshape(n0 if full0[i] else 1, n1 if full1[i] else 1) for i, a in enumerate(arrays)]
    return views, (n0, n1)


class FastOps:
    """The fast path's kernels bound to one plan's flush-to-zero setting."""

    def __init__(self, ftz: bool) -> None:
        module, reason = _load()
        if module is None:
            raise BackendUnavailable(f"sim fast path unavailable: {reason}")
        self.jit = module
        self.ftz = ftz

    def rounder(self, out: np.ndarray) -> Step:
        """A step rounding the C-contiguous float32 ``out`` to fp16 in place."""
        flat = out.reshape(-1)
        assert np.shares_memory(flat, out), "fast rounding needs a contiguous output"
        kernel, ftz = self.jit.round_inplace, self.ftz
        return lambda: kernel(flat, ftz)

    def then_round(self, compute: Step, out: np.ndarray) -> Step:
        """``compute`` (writing ``out``) followed by rounding ``out`` in place."""
        rounder = self.rounder(out)

        def step() -> None:
            compute()
            rounder()

        return step

    def binary(self, kind: str, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> Step | None:
        """A step writing ``round(x <kind> y)`` into ``out`` (kind: add, sub, mul, div), or
        None when the operands' layout is not one the kernel covers."""
        if np.shares_memory(out, x) or np.shares_memory(out, y):
            return None
        collapsed = collapse_2d(out.shape, [np.asarray(x), np.asarray(y), out])
        if collapsed is None:
            return None
        (x2, y2, o2), _ = collapsed
        kernel, code, ftz = self.jit.binary_into, self.jit.BINARY[kind], self.ftz
        return lambda: kernel(x2, y2, o2, code, ftz)

    def unary(self, kind: str, x: np.ndarray, eps: np.float32, out: np.ndarray) -> Step | None:
        """A step writing the rounded ``kind(x)`` into ``out`` for the unary ops whose last
        operation is exact (sqrt, rsqrt; sigmoid and silu after NumPy's exp), or None."""
        if x.shape != out.shape or not x.flags.c_contiguous or x.dtype != np.float32:
            return None
        if np.shares_memory(out, x):
            return None
        xf, of, jit, ftz = x.reshape(-1), out.reshape(-1), self.jit, self.ftz
        if kind == "sqrt":
            return lambda: jit.sqrt_into(xf, of, ftz)
        if kind == "rsqrt":
            return lambda: jit.rsqrt_into(xf, eps, of, ftz)
        if kind == "sigmoid":

            def sigmoid() -> None:
                np.negative(x, out=out)
                np.exp(out, out=out)
                jit.sigmoid_finish(of, ftz)

            return sigmoid
        if kind == "silu":

            def silu() -> None:
                np.negative(x, out=out)
                np.exp(out, out=out)
                jit.silu_finish(xf, of, ftz)

            return silu
        return None

    def store_block(self, src: np.ndarray, dst: np.ndarray, row0: int, col0: int) -> bool:
        """Round float32 ``src`` ``[rows, cols]`` into the C-contiguous ``dst`` at
        ``(row0, col0)`` in one pass (no flush: surface writes never flush); False when
        ``src`` is neither C-contiguous nor the transpose of a C-contiguous array."""
        if src.dtype != np.float32 or src.ndim != 2 or not dst.flags.c_contiguous:
            return False
        if src.flags.c_contiguous:
            self.jit.round_block(src, dst, row0, col0, False)
        elif src.T.flags.c_contiguous:
            self.jit.round_block(src.T, dst, row0, col0, True)
        else:
            return False
        return True
