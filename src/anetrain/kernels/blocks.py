"""Reusable MIL fragments for the transformer kernels.

Layout conventions (S = sequence, HD = head dim):
- surfaces are channel-first ``[1, C, 1, W]``; a packed row holds activations then weights;
- "token-major" tensors are ``[1, 1, S, N]`` (what matmul consumes);
- attention tensors are ``[1, heads, S, HD]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from anetrain.mil import BOOL, FP16, INT32, Builder, DType, Var

PERM_LAST2 = [0, 1, 3, 2]


class Fragments:
    """Builder helpers that share constants (``bF``, ``bT``, the last-two-axes perm)."""

    def __init__(self, b: Builder, dtype: DType = FP16) -> None:
        self.b = b
        self.dtype = dtype  # float dtype of every tensor (fp32 turns fp16 rounding off)
        self._consts: dict[str, Var] = {}

    def _shared(self, name: str, value: object, dtype: DType) -> Var:
        if name not in self._consts:
            self._consts[name] = self.b.const(value, name=name, dtype=dtype)
        return self._consts[name]

    @property
    def false(self) -> Var:
        return self._shared("bF", False, BOOL)

    @property
    def true(self) -> Var:
        return self._shared("bT", True, BOOL)

    @property
    def perm_last2(self) -> Var:
        return self._shared("pm", PERM_LAST2, INT32)

    def ints(self, values: Sequence[int], name: str) -> Var:
        return self.b.const(list(values), name=name, dtype=INT32)

    def scalar(self, value: float, name: str) -> Var:
        return self.b.const(value, name=name, dtype=self.dtype)

    # ---- surfaces <-> token-major ---------------------------------------------------------

    def slice_cols(self, x: Var, ch0: int, channels: int, col: int, width: int, name: str) -> Var:
        """``x[0, ch0:ch0+channels, 0, col:col+width]`` as ``[1, channels, 1, width]``."""
        begin = self.ints([0, ch0, 0, col], f"{name}_b")
        size = self.ints([1, channels, 1, width], f"{name}_s")
        return self.b.slice_by_size(x, begin, size, name=name)

    def token_major(self, x: Var, name: str) -> Var:
        """``[1, C, 1, S]`` -> ``[1, 1, S, C]``."""
        _, c, _, s = x.shape
        r = self.b.reshape(x, self.ints([1, 1, c, s], f"{name}_r"), name=f"{name}_4")
        return self.b.transpose(r, self.perm_last2, name=name)

    def channel_first(self, x: Var, name: str) -> Var:
        """``[1, 1, S, C]`` (or ``[1, h, S, d]`` flattened to C = h*d) -> ``[1, C, 1, S]``."""
        _, h, s, d = x.shape
        t = self.b.transpose(x, self.perm_last2, name=f"{name}_t")
        return self.b.reshape(t, self.ints([1, h * d, 1, s], f"{name}_r"), name=name)

    def packed_matrix(self, x: Var, ch0: int, rows: int, col: int, cols: int, name: str) -> Var:
        """A ``[rows, cols]`` matrix packed in spatial columns, as ``[1, 1, rows, cols]``."""
        sl = self.slice_cols(x, ch0, rows, col, cols, f"{name}_sl")
        return self.b.reshape(sl, self.ints([1, 1, rows, cols], f"{name}_r"), name=name)

    def linear(self, act_tm: Var, w: Var, name: str, transpose_w: bool = False) -> Var:
        """``act_tm [1,1,S,IC] @ w [1,1,IC,OC]`` (or ``w^T`` for ``[1,1,OC,IC]``)."""
        flag = self.true if transpose_w else self.false
        return self.b.matmul(act_tm, w, self.false, flag, name=name)

    # ---- attention ------------------------------------------------------------------------

    def heads(self, x_tm: Var, n_heads: int, name: str) -> Var:
        """``[1, 1, S, n*HD]`` -> ``[1, n, S, HD]``."""
        _, _, s, c = x_tm.shape
        r = self.b.reshape(
            x_tm, self.ints([1, s, n_heads, c // n_heads], f"{name}_r"), name=f"{name}_4"
        )
        return self.b.transpose(r, self.ints([0, 2, 1, 3], f"{name}_p"), name=name)

    def heads_from_channels(self, x: Var, n_heads: int, name: str) -> Var:
        """``[1, n*HD, 1, S]`` -> ``[1, n, S, HD]`` (channel = head * HD + d)."""
        _, c, _, s = x.shape
        r = self.b.reshape(
            x, self.ints([1, n_heads, c // n_heads, s], f"{name}_r"), name=f"{name}_4"
        )
        return self.b.transpose(r, self.perm_last2, name=name)

    def rope(self, x: Var, cos: Var, sin: Var, name: str, inverse: bool = False) -> Var:
        """Rotate interleaved pairs ``(2i, 2i+1)``; ``inverse`` applies the transpose rotation
        (the RoPE backward). ``cos``/``sin`` are ``[1, 1, S, HD]`` with each pair duplicated."""
        _, h, s, d = x.shape
        pairs = self.b.reshape(x, self.ints([1, h, s * d // 2, 2], f"{name}_pr"), name=f"{name}_p")
        size = self.ints([1, h, s * d // 2, 1], f"{name}_sz")
        even = self.b.slice_by_size(
            pairs, self.ints([0, 0, 0, 0], f"{name}_b0"), size, name=f"{name}_e"
        )
        odd = self.b.slice_by_size(
            pairs, self.ints([0, 0, 0, 1], f"{name}_b1"), size, name=f"{name}_o"
        )
        neg = self.scalar(-1.0, f"{name}_m1")
        axis = self.b.const(3, name=f"{name}_ax", dtype=INT32)
        if inverse:  # (a, b) -> (b, -a)
            parts = (odd, self.b.mul(even, neg, name=f"{name}_ne"))
        else:  # (a, b) -> (-b, a)
            parts = (self.b.mul(odd, neg, name=f"{name}_no"), even)
        rot = self.b.concat(parts, axis, self.false, name=f"{name}_c")
        rot = self.b.reshape(rot, self.ints([1, h, s, d], f"{name}_rs"), name=f"{name}_rot")
        xc = self.b.mul(x, cos, name=f"{name}_xc")
        rs = self.b.mul(rot, sin, name=f"{name}_rsn")
        return self.b.add(xc, rs, name=name)

    def head_rmsnorm(self, x: Var, w: Var, eps: float, name: str) -> Var:
        """Qwen3's QK-norm: RMSNorm over each head's HD values, ``x * rsqrt(mean(x^2) + eps)
        * w``; x ``[1, h, S, HD]``, w ``[1, 1, 1, HD]`` (one weight for every head)."""
        sq = self.b.mul(x, x, name=f"{name}_sq")
        ms = self.b.reduce_mean(sq, self.ints([-1], f"{name}_ax"), self.true, name=f"{name}_ms")
        eps_c = self.b.const(eps, name=f"{name}_eps", dtype=self.dtype)
        rrms = self.b.rsqrt(ms, eps_c, name=f"{name}_rr")
        return self.b.mul(self.b.mul(x, rrms, name=f"{name}_n"), w, name=name)

    def gqa_tile(self, kv: Var, group: int, name: str) -> Var:
        """``[1, KVH, S, HD]`` -> ``[1, KVH*group, S, HD]``; query head h reads kv h // group."""
        if group == 1:
            return kv
        _, kvh, s, d = kv.shape
        flat = self.b.reshape(kv, self.ints([1, kvh, 1, s * d], f"{name}_r"), name=f"{name}_f")
        axis = self.b.const(2, name=f"{name}_ax", dtype=INT32)
        tiled = self.b.concat([flat] * group, axis, self.false, name=f"{name}_c")
        return self.b.reshape(tiled, self.ints([1, kvh * group, s, d], f"{name}_o"), name=name)

    def gqa_reduce(self, dkv: Var, group: int, name: str) -> Var:
        """Sum the ``group`` query-head gradients of each kv head: the adjoint of gqa_tile."""
        if group == 1:
            return dkv
        _, h, s, d = dkv.shape
        kvh = h // group
        r = self.b.reshape(dkv, self.ints([1, kvh, group, s * d], f"{name}_r"), name=f"{name}_4")
        summed = self.b.reduce_sum(r, self.ints([2], f"{name}_ax"), self.true, name=f"{name}_s")
        return self.b.reshape(summed, self.ints([1, kvh, s, d], f"{name}_o"), name=name)

    def causal_probs(self, q: Var, k: Var, mask: Var, scale: float, name: str) -> Var:
        """``softmax(q k^T * scale + mask)`` over keys, ``[1, H, S, S]``; the mask is additive
        because the ANE ignores scaled_dot_product_attention's attn_mask."""
        scores = self.b.matmul(q, k, self.false, self.true, name=f"{name}_qk")
        scaled = self.b.mul(scores, self.scalar(scale, f"{name}_scv"), name=f"{name}_sc")
        masked = self.b.add(scaled, mask, name=f"{name}_ms")
        axis = self.b.const(-1, name=f"{name}_ax", dtype=INT32)
        return self.b.softmax(masked, axis, name=name)

    def concat_channels(self, parts: Sequence[Var], name: str) -> Var:
        if len(parts) == 1:
            return parts[0]
        axis = self.b.const(1, name=f"{name}_ax", dtype=INT32)
        return self.b.concat(list(parts), axis, self.false, name=name)
