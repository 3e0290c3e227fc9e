"""AdamW over the flat parameter buffer: one vector op per moment, no per-tensor loops.

Decoupled weight decay as in maderix/ANE's dynamic trainer (``training/training_dynamic/train.m``):
``w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w)``, with norm weights exempt.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from anetrain.runtime.sim.fast import resolve_fast


@dataclass(frozen=True)
class AdamWConfig:
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1


class AdamW:
    """AdamW over flat fp32 buffers.

    Two implementations of one arithmetic, giving the same bits: with numba (the ``fast``
    extra; ``fast=None`` follows :func:`anetrain.runtime.sim.fast.resolve_fast`) one fused pass
    over the buffers, split over two threads; otherwise NumPy in cache-sized chunks (each
    element is touched by a dozen ufuncs, and 32K-element blocks keep the working set in L2
    instead of streaming ~10 full passes over memory). ``step(..., grad_scale=)`` applies
    gradient clipping inside the same pass instead of rescaling the gradients first.
    """

    CHUNK = 1 << 15

    def __init__(
        self,
        n: int,
        decay_mask: np.ndarray,
        config: AdamWConfig | None = None,
        *,
        fast: bool | None = None,
    ) -> None:
        self.config = config or AdamWConfig()
        self.m = np.zeros(n, dtype=np.float32)
        self.v = np.zeros(n, dtype=np.float32)
        self.t = 0
        mask = np.asarray(decay_mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"decay mask has shape {mask.shape}, expected ({n},)")
        self.decay_runs = _true_runs(mask)  # decayed elements (norm weights are exempt)
        self._jit = _load_jit() if resolve_fast(fast) else None
        if self._jit is not None:
            self._halves = _split_segments(_segments(self.decay_runs, n), 2)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="adamw")
        else:
            self._tmp = np.empty(self.CHUNK, dtype=np.float32)
            self._tmp2 = np.empty(self.CHUNK, dtype=np.float32)
            self._tmp3 = np.empty(self.CHUNK, dtype=np.float32)

    def step(self, w: np.ndarray, g: np.ndarray, lr: float, grad_scale: float = 1.0) -> None:
        """Update ``w`` in place from gradient ``grad_scale * g`` (both flat fp32; ``g`` is
        left as it is)."""
        c = self.config
        self.t += 1
        keep = np.float32(1.0 - lr * c.weight_decay) if c.weight_decay else np.float32(1.0)
        bc1 = 1.0 - c.beta1**self.t
        bc2 = 1.0 - c.beta2**self.t
        consts = np.array(
            [
                grad_scale,
                keep,
                c.beta1,
                1 - c.beta1,
                c.beta2,
                1 - c.beta2,
                1.0 / np.sqrt(bc2),
                c.eps,
                lr / bc1,
            ],
            dtype=np.float32,
        )
        if self._jit is not None:
            kernel = self._jit.adamw_segments
            (s0, e0, d0), (s1, e1, d1) = self._halves
            other = self._pool.submit(kernel, w, g, self.m, self.v, s1, e1, d1, consts)
            kernel(w, g, self.m, self.v, s0, e0, d0, consts)
            other.result()
            return
        self._numpy_step(w, g, consts, scaled=grad_scale != 1.0)

    def _numpy_step(self, w: np.ndarray, g: np.ndarray, consts: np.ndarray, scaled: bool) -> None:
        gscale, keep, b1, one_b1, b2, one_b2, inv_sqrt_bc2, eps, step_size = consts
        # decoupled weight decay first: w -= lr * wd * w (uses the pre-update weights)
        if keep != 1:
            for a, b in self.decay_runs:
                w[a:b] *= keep
        for start in range(0, w.size, self.CHUNK):
            end = min(start + self.CHUNK, w.size)
            n = end - start
            gs, ms, vs, ws = g[start:end], self.m[start:end], self.v[start:end], w[start:end]
            t, t2 = self._tmp[:n], self._tmp2[:n]
            if scaled:  # clipping: the scaled gradient, g itself stays
                gs = np.multiply(gs, gscale, out=self._tmp3[:n])
            ms *= b1  # m = b1 m + (1 - b1) g
            np.multiply(gs, one_b1, out=t)
            ms += t
            vs *= b2  # v = b2 v + (1 - b2) g^2
            np.multiply(gs, gs, out=t)
            t *= one_b2
            vs += t
            np.sqrt(vs, out=t2)  # sqrt(v_hat) + eps
            t2 *= inv_sqrt_bc2
            t2 += eps
            np.divide(ms, t2, out=t)  # w -= lr * m_hat / (sqrt(v_hat) + eps)
            t *= step_size
            ws -= t

    def state_dict(self) -> dict[str, object]:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict[str, object]) -> None:
        m, v = np.asarray(state["m"]), np.asarray(state["v"])
        if m.shape != self.m.shape or v.shape != self.v.shape:
            raise ValueError(f"optimizer state has {m.size} moments, expected {self.m.size}")
        self.m[...] = m
        self.v[...] = v
        self.t = int(state["t"])  # type: ignore[arg-type]


def global_norm(g: np.ndarray, chunk: int = 1 << 16) -> float:
    """L2 norm over every gradient: fp32 dot products per chunk, summed in float64, so ~1e8
    values neither lose digits nor need a float64 copy."""
    total = 0.0
    for start in range(0, g.size, chunk):
        part = g[start : start + chunk]
        total += float(np.dot(part, part))
    return math.sqrt(total)


def all_finite(x: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Whether every element of the flat ``x`` is finite, with a chunk-sized temporary (not
    one bool per element: 110 MB at stories110m)."""
    return all(bool(np.isfinite(x[i : i + chunk]).all()) for i in range(0, x.size, chunk))


def clip_factor(norm: float, max_norm: float) -> float:
    """The factor that brings a gradient of L2 norm ``norm`` down to at most ``max_norm``
    (1.0 when it is within; ``max_norm <= 0`` turns clipping off)."""
    return max_norm / (norm + 1e-6) if max_norm > 0 and norm > max_norm else 1.0


def clip_by_global_norm(g: np.ndarray, max_norm: float) -> float:
    """Scale ``g`` in place so its norm is at most ``max_norm``; returns the norm before.
    (:meth:`AdamW.step`'s ``grad_scale`` does the same inside the update, saving a pass.)"""
    norm = global_norm(g)
    factor = clip_factor(norm, max_norm)
    if factor != 1.0:
        g *= factor
    return norm


def _load_jit() -> ModuleType | None:
    try:
        from anetrain.train import optim_jit
    except ImportError:
        return None
    return optim_jit


Segments = tuple[np.ndarray, np.ndarray, np.ndarray]


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in a 1-D bool mask, with no temporary larger
    than one bool per element (a 110M-parameter mask must not grow int64 copies)."""
    if mask.size == 0:
        return []
    starts = np.concatenate(([0], np.flatnonzero(mask[1:] != mask[:-1]) + 1))
    ends = np.append(starts[1:], mask.size)
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True) if mask[a]]


def _segments(decay_runs: list[tuple[int, int]], n: int) -> list[tuple[int, int, bool]]:
    """``[0, n)`` as consecutive (start, end, decayed) pieces."""
    out, pos = [], 0
    for a, b in decay_runs:
        if a > pos:
            out.append((pos, a, False))
        out.append((a, b, True))
        pos = b
    if pos < n:
        out.append((pos, n, False))
    return out


def _split_segments(segments: list[tuple[int, int, bool]], parts: int) -> list[Segments]:
    """``parts`` lists of segments with about equal element counts (as int64/bool arrays)."""
    n = segments[-1][1] if segments else 0
    bounds = [n * k // parts for k in range(parts + 1)]
    out = []
    for k in range(parts):
        lo, hi = bounds[k], bounds[k + 1]
        pieces = [(max(a, lo), min(b, hi), d) for a, b, d in segments if a < hi and b > lo]
        out.append(
            (
                np.array([p[0] for p in pieces], np.int64),
                np.array([p[1] for p in pieces], np.int64),
                np.array([p[2] for p in pieces], np.bool_),
            )
        )
    return out
