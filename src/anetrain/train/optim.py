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
    def __init__(self, n: int, decay_mask: np.ndarray, config: AdamWConfig | None = None) -> None:
        self.config = config or AdamWConfig()
        self.m = np.zeros(n, dtype=np.float32)
        self.v = np.zeros(n, dtype=np.float32)
        self.t = 0
        # per-element decay rate: wd where decayed, 0 for norm weights
        self.decay = np.where(decay_mask, self.config.weight_decay, 0.0).astype(np.float32)
        self._tmp = np.empty(n, dtype=np.float32)

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        """Update ``w`` in place from gradient ``g`` (both flat fp32)."""
        c = self.config
        self.t += 1
        self.m *= c.beta1
        self.m += (1 - c.beta1) * g
        self.v *= c.beta2
        np.multiply(g, g, out=self._tmp)
        self._tmp *= 1 - c.beta2
        self.v += self._tmp
        bc1 = 1 - c.beta1**self.t
        bc2 = 1 - c.beta2**self.t
        # tmp = m_hat / (sqrt(v_hat) + eps)
        np.divide(self.v, bc2, out=self._tmp)
        np.sqrt(self._tmp, out=self._tmp)
        self._tmp += c.eps
        np.divide(self.m, self._tmp, out=self._tmp)
        self._tmp /= bc1
        self._tmp += self.decay * w
        self._tmp *= lr
        w -= self._tmp

    def state_dict(self) -> dict[str, object]:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict[str, object]) -> None:
        m, v = np.asarray(state["m"]), np.asarray(state["v"])
        if m.shape != self.m.shape or v.shape != self.v.shape:
            raise ValueError(f"optimizer state has {m.size} moments, expected {self.m.size}")
        self.m[...] = m
        self.v[...] = v
        self.t = int(state["t"])  # type: ignore[arg-type]


def global_norm(g: np.ndarray, chunk: int = 1 << 20) -> float:
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
