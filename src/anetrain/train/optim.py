"""AdamW over the flat parameter buffer: one vector op per moment, no per-tensor loops.

Decoupled weight decay as in the original dynamic trainer (seed-inventory §5.5):
``w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w)``, with norm weights exempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AdamWConfig:
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1


class AdamW:
    """AdamW over flat fp32 buffers, in cache-sized chunks: each element is touched by a dozen
    ufuncs, and running them on 32K-element blocks keeps the working set in L2 instead of
    streaming ~10 full passes over memory."""

    CHUNK = 1 << 15

    def __init__(self, n: int, decay_mask: np.ndarray, config: AdamWConfig | None = None) -> None:
        self.config = config or AdamWConfig()
        self.m = np.zeros(n, dtype=np.float32)
        self.v = np.zeros(n, dtype=np.float32)
        self.t = 0
        mask = np.asarray(decay_mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"decay mask has shape {mask.shape}, expected ({n},)")
        # contiguous runs of decayed elements (norm weights are exempt)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
        self.decay_runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        self._tmp = np.empty(self.CHUNK, dtype=np.float32)
        self._tmp2 = np.empty(self.CHUNK, dtype=np.float32)

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        """Update ``w`` in place from gradient ``g`` (both flat fp32)."""
        c = self.config
        self.t += 1
        # decoupled weight decay first: w -= lr * wd * w (uses the pre-update weights)
        if c.weight_decay:
            keep = np.float32(1.0 - lr * c.weight_decay)
            for a, b in self.decay_runs:
                w[a:b] *= keep
        bc1 = 1.0 - c.beta1**self.t
        bc2 = 1.0 - c.beta2**self.t
        b1, b2 = np.float32(c.beta1), np.float32(c.beta2)
        one_b1, one_b2 = np.float32(1 - c.beta1), np.float32(1 - c.beta2)
        inv_sqrt_bc2 = np.float32(1.0 / np.sqrt(bc2))
        step_size = np.float32(lr / bc1)
        eps = np.float32(c.eps)
        for start in range(0, w.size, self.CHUNK):
            end = min(start + self.CHUNK, w.size)
            n = end - start
            gs, ms, vs, ws = g[start:end], self.m[start:end], self.v[start:end], w[start:end]
            t, t2 = self._tmp[:n], self._tmp2[:n]
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


def clip_by_global_norm(g: np.ndarray, max_norm: float) -> float:
    """Scale ``g`` in place so its norm is at most ``max_norm``; returns the norm before."""
    norm = global_norm(g)
    if max_norm > 0 and norm > max_norm:
        g *= max_norm / (norm + 1e-6)
    return norm
