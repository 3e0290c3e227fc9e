"""Parameters as one flat buffer carved into named views (llm.c ``malloc_and_point_parameters``).

Every tensor is ``[out, in]`` row-major and per-layer tensors are stacked on a leading ``L`` axis,
in llama2.c's file order, so AdamW, grad-norm and zeroing are single vector ops on ``flat`` and the
llama2.c v0 body is ``flat`` plus the RoPE tables. Gradients and Adam moments reuse this class.
Init follows maderix's dynamic ``--scratch`` init (maderix/ANE, ``train_large_ane``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anetrain.model.config import ModelConfig

# Norm weights: exempt from weight decay (as maderix/ANE's trainer does) and initialised to 1.
NO_DECAY = ("rms_att", "rms_ffn", "rms_final", "q_norm", "k_norm")


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape, in buffer order (llama2.c v0 order; Qwen3's q/k norms after it)."""
    D, H, L, V = cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.vocab_size
    QD, KVD = cfg.qd, cfg.kvd
    shapes = {
        "embed": (V, D),  # token embedding, also the classifier (tied)
        "rms_att": (L, D),
        "wq": (L, QD, D),
        "wk": (L, KVD, D),
        "wv": (L, KVD, D),
        "wo": (L, D, QD),
        "rms_ffn": (L, D),
        "w1": (L, H, D),  # gate projection
        "w2": (L, D, H),  # down projection
        "w3": (L, H, D),  # up projection
        "rms_final": (D,),
    }
    if cfg.qk_norm:  # per-head RMSNorm weights, shared by every head of a layer
        shapes["q_norm"] = (L, cfg.head_dim)
        shapes["k_norm"] = (L, cfg.head_dim)
    if not cfg.tied_embeddings:  # a separate classifier (llama2.c's wcls, HF's lm_head)
        shapes["lm_head"] = (V, D)
    return shapes


@dataclass(frozen=True)
class LayerParams:
    """Views of one block's tensors (no copies)."""

    rms_att: np.ndarray  # [D]
    wq: np.ndarray  # [QD, D]
    wk: np.ndarray  # [KVD, D]
    wv: np.ndarray  # [KVD, D]
    wo: np.ndarray  # [D, QD]
    rms_ffn: np.ndarray  # [D]
    w1: np.ndarray  # [H, D]
    w2: np.ndarray  # [D, H]
    w3: np.ndarray  # [H, D]
    q_norm: np.ndarray | None = None  # [HD] with qk_norm
    k_norm: np.ndarray | None = None  # [HD] with qk_norm


class Params:
    """Named views into one contiguous ``flat`` buffer; ``params["wq"]`` is ``[L, QD, D]``."""

    def __init__(
        self, cfg: ModelConfig, flat: np.ndarray | None = None, dtype: npt.DTypeLike = np.float32
    ) -> None:
        shapes = param_shapes(cfg)
        n = sum(int(np.prod(s)) for s in shapes.values())
        if flat is None:
            flat = np.zeros(n, dtype=dtype)
        if flat.ndim != 1 or flat.size != n or not flat.flags.c_contiguous:
            raise ValueError(f"flat buffer must be contiguous 1-D of {n} elements for {cfg}")
        self.config = cfg
        self.flat = flat  # [N]
        self.tensors: dict[str, np.ndarray] = {}
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            self.tensors[name] = flat[off : off + size].reshape(shape)
            self.offsets[name] = (off, off + size)
            off += size

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self.tensors.items())

    @property
    def dtype(self) -> np.dtype:
        return self.flat.dtype

    @property
    def classifier(self) -> np.ndarray:
        """``[V, D]``: the embedding when tied, else ``lm_head``."""
        return self.tensors["embed" if self.config.tied_embeddings else "lm_head"]

    def layer(self, i: int) -> LayerParams:
        t = self.tensors
        return LayerParams(**{f: t[f][i] for f in LayerParams.__dataclass_fields__ if f in t})

    def zeros_like(self, dtype: npt.DTypeLike | None = None) -> Params:
        return Params(self.config, dtype=self.dtype if dtype is None else dtype)

    def copy(self) -> Params:
        return Params(self.config, self.flat.copy())

    def astype(self, dtype: npt.DTypeLike) -> Params:
        """Same object when already ``dtype``, else a converted copy."""
        if self.flat.dtype == np.dtype(dtype):
            return self
        return Params(self.config, self.flat.astype(dtype))

    def decay_mask(self) -> np.ndarray:
        """``[N]`` bool, True where AdamW weight decay applies (matrices and embedding)."""
        mask = np.ones(self.flat.size, dtype=bool)
        for name in NO_DECAY:
            if name not in self.offsets:
                continue
            lo, hi = self.offsets[name]
            mask[lo:hi] = False
        return mask

    def __repr__(self) -> str:
        return f"Params({self.flat.size:,} x {self.dtype}, {self.config.arch_hash()})"


def init_params(cfg: ModelConfig, seed: int = 42) -> Params:
    """maderix dynamic ``--scratch`` init: all uniform, fan scalings copied as-is.

    ``Wq,Wk,Wv ~ U(±1/√D)``; ``Wo ~ U(±1/√QD)·α``; ``W2 ~ U(±1/√D)·α``; ``W1,W3 ~ U(±1/√H)``;
    norms 1; ``embed ~ U(±0.02)``; ``α = cfg.res_alpha``. The draw order is the buffer order.
    """
    rng = np.random.default_rng(seed)
    p = Params(cfg)
    D, H, QD, a = cfg.dim, cfg.hidden_dim, cfg.qd, cfg.res_alpha
    bound = {
        "embed": 0.02,
        "lm_head": 0.02,
        "wq": 1 / np.sqrt(D),
        "wk": 1 / np.sqrt(D),
        "wv": 1 / np.sqrt(D),
        "wo": a / np.sqrt(QD),
        "w1": 1 / np.sqrt(H),
        "w2": a / np.sqrt(D),
        "w3": 1 / np.sqrt(H),
    }
    for name, t in p.items():
        if name in NO_DECAY:
            t[...] = 1.0
        else:  # U(-b, b) drawn in place as fp32 (no float64 temporary for a 155M-row embed)
            rng.random(out=t, dtype=np.float32)
            t *= np.float32(2 * bound[name])
            t -= np.float32(bound[name])
    return p
