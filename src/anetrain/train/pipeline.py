"""One training step through the dynamic ANE kernel pipeline (seed-inventory §5.4, dynamic).

Forward and backward-dx run in the ten kernels of :mod:`anetrain.kernels.dynamic`, each compiled
once and shared by all layers: every layer owns a pre-staged input surface per weight-bearing
kernel, bound to the kernel by its own request. The CPU does RMSNorm, the residual adds, SiLU
backward, the classifier and cross-entropy, and the weight gradients (BLAS on a worker thread,
overlapped with kernel evaluation and waited for lazily).

Activations are channel-first ``[C, S]`` (the surface layout); weights are ``[out, in]``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from anetrain import runtime
from anetrain.kernels.dynamic import Dims, KernelSpec, Region, build_kernels
from anetrain.mil.types import FP16, DType
from anetrain.model.config import ModelConfig
from anetrain.model.params import Params
from anetrain.model.reference import rmsnorm_backward, rmsnorm_forward

FORWARD_KERNELS = ("sdpa_fwd", "wo_fwd", "ffn_fused")
PHASES = ("kernels", "io", "classifier", "elementwise", "rmsnorm", "blas_wait")

# kernel -> {input region -> (param name, transposed?)}: what weight staging writes
WEIGHT_REGIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "sdpa_fwd": {"wq_t": ("wq", True), "wk_t": ("wk", True), "wv_t": ("wv", True)},
    "wo_fwd": {"wo_t": ("wo", True)},
    "ffn_fused": {"w1_t": ("w1", True), "w3_t": ("w3", True), "w2": ("w2", False)},
    "ffn_bwd_w2t": {"w2": ("w2", False)},
    "ffn_bwd_w13t": {"w1": ("w1", False), "w3": ("w3", False)},
    "wot_bwd": {"wo": ("wo", False)},
    "q_bwd": {"wq": ("wq", False)},
    "kv_bwd": {"wk": ("wk", False), "wv": ("wv", False)},
}


class PhaseTimer:
    """Accumulates wall time per phase (ms) for the per-step telemetry."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[phase] += (time.perf_counter() - start) * 1e3

    def take(self) -> dict[str, float]:
        out = {p: round(self.ms.get(p, 0.0), 3) for p in PHASES}
        self.ms.clear()
        return out


@dataclass
class LayerActs:
    """What the forward keeps for the backward of one layer (fp32 unless noted)."""

    x: np.ndarray  # [D, S] layer input
    xn: np.ndarray  # [D, S] RMSNorm(x)
    rrms1: np.ndarray  # [S, 1]
    attn: np.ndarray  # [QD, S] attention output (pre-Wo)
    qkv: np.ndarray  # [QD+2KVD, S] the sdpa_fwd taps Q_rope, K_rope, V (fp16 values)
    x2: np.ndarray  # [D, S] after the attention residual
    x2n: np.ndarray  # [D, S] RMSNorm(x2)
    rrms2: np.ndarray  # [S, 1]
    h1: np.ndarray  # [H, S]
    h3: np.ndarray  # [H, S]
    gate: np.ndarray  # [H, S] silu(h1) * h3


@dataclass
class StepResult:
    loss: float
    n_tokens: int
    phases: dict[str, float] = field(default_factory=dict)


class CompactVocab:
    """Classifier rows for the token ids the data uses (seed §5.2): the softmax runs over the
    used vocabulary only, which is what makes a 32K (or 152K) classifier affordable."""

    def __init__(self, used_ids: np.ndarray | None, vocab_size: int) -> None:
        if used_ids is None:
            used_ids = np.arange(vocab_size)
        self.ids = np.unique(np.asarray(used_ids, dtype=np.int64))
        if self.ids.size == 0 or self.ids[0] < 0 or self.ids[-1] >= vocab_size:
            raise ValueError("used token ids must lie in [0, vocab_size)")
        self.full_to_compact = np.full(vocab_size, -1, dtype=np.int64)
        self.full_to_compact[self.ids] = np.arange(self.ids.size)
        # every id used: plain slices instead of gathers and scatters of the embedding
        self.rows: slice | np.ndarray = slice(None) if self.ids.size == vocab_size else self.ids

    def compact(self, targets: np.ndarray) -> np.ndarray:
        out = self.full_to_compact[targets]
        if (out < 0).any():
            bad = int(targets[out < 0][0])
            raise ValueError(f"target token {bad} is outside the compacted vocabulary")
        return out


class DynamicPipeline:
    """Compiles the ten kernels once and runs forward+backward for one ``[S]`` window."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        backend: str | runtime.Backend = "sim",
        chip: str | None = None,
        dtype: DType = FP16,
        used_ids: np.ndarray | None = None,
        overlap_blas: bool = True,
        forward_only: bool = False,
    ) -> None:
        be = backend if isinstance(backend, runtime.Backend) else runtime.get_backend(backend, chip)
        self.backend = be
        self.config = config
        # M1/M2 take only the program(1.0)/ios16 dialect; the kernels use no newer op
        target = "ios18" if "1.3" in be.chip.program_versions else "ios16"
        self.dims = Dims.from_config(config, dtype, target)
        self.vocab = CompactVocab(used_ids, config.vocab_size)
        self.timer = PhaseTimer()
        self.forward_only = forward_only  # compile just the three forward kernels (prefill)
        self.specs: dict[str, KernelSpec] = {
            name: spec
            for name, spec in build_kernels(self.dims).items()
            if not forward_only or name in FORWARD_KERNELS
        }
        start = time.perf_counter()
        self.kernels = {
            name: be.compile(spec.model.program, spec.model.weights, name=name)
            for name, spec in self.specs.items()
        }
        self.compile_s = time.perf_counter() - start
        L = config.n_layers
        self.layer_in = {
            name: [self.kernels[name].new_surface() for _ in range(L)]
            for name in WEIGHT_REGIONS
            if name in self.kernels
        }
        self.requests = {
            name: [self.kernels[name].request(s) for s in surfaces]
            for name, surfaces in self.layer_in.items()
        }
        # Two cores, two threads of BLAS work: the main thread (kernels, classifier) and one
        # worker (weight gradients), each with single-threaded BLAS so they never oversubscribe.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dw") if overlap_blas else None
        self._split = ThreadPoolExecutor(1, thread_name_prefix="mm") if overlap_blas else None
        self._pending: list[Future[None]] = []
        self._blas_limits = _single_threaded_blas() if overlap_blas else None

    # ---- surfaces -------------------------------------------------------------------------

    @staticmethod
    def _write(surface: runtime.Surface, region: Region, data: np.ndarray) -> None:
        """Write fp32 ``data`` ``[channels, width]`` into ``region`` (rounding to fp16)."""
        surface.write_block(data, region.ch, region.col)

    @staticmethod
    def _read(surface: runtime.Surface, region: Region) -> np.ndarray:
        """Output block ``region`` as float32 ``[channels, S]``."""
        return surface.read(region.ch, region.channels)

    @staticmethod
    def _copy(
        dst: runtime.Surface, dst_region: Region, src: runtime.Surface, src_region: Region
    ) -> None:
        """Surface-to-surface copy of an output block into an input region (io_copy)."""
        dst.copy_from(
            src,
            dst_ch=dst_region.ch,
            src_ch=src_region.ch,
            channels=src_region.channels,
            dst_col=dst_region.col,
        )

    def stage_weights(self, params: Params) -> None:
        """Write every layer's weights into its input surfaces (after init and each update)."""
        with self.timer("io"):
            for kernel, regions in WEIGHT_REGIONS.items():
                if kernel not in self.specs:
                    continue
                spec = self.specs[kernel]
                for layer, surface in enumerate(self.layer_in[kernel]):
                    for region_name, (param, transposed) in regions.items():
                        w = params[param][layer]
                        self._write(surface, spec.inputs[region_name], w.T if transposed else w)

    # ---- eval -----------------------------------------------------------------------------

    def _eval(self, kernel: str, layer: int | None = None) -> runtime.Surface:
        with self.timer("kernels"):
            if layer is None:
                self.kernels[kernel].eval()
            else:
                self.requests[kernel][layer].eval()
        return self.kernels[kernel].output

    def _matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` split in two over the main thread and a helper thread (each with
        single-threaded BLAS): the classifier GEMMs are the largest of the step."""
        rows, cols = a.shape[0], b.shape[1]
        if self._split is None or rows * cols < 1 << 20:
            return a @ b
        out = np.empty((rows, cols), np.result_type(a, b))
        if cols >= rows:  # split the output columns
            h = cols // 2
            fut = self._split.submit(np.matmul, a, b[:, h:], out=out[:, h:])
            np.matmul(a, b[:, :h], out=out[:, :h])
        else:  # split the output rows
            h = rows // 2
            fut = self._split.submit(np.matmul, a[h:], b, out=out[h:])
            np.matmul(a[:h], b, out=out[:h])
        fut.result()
        return out

    def _defer(self, fn: Callable[[], None]) -> None:
        if self._pool is None:
            fn()
        else:
            self._pending.append(self._pool.submit(fn))

    def wait(self) -> None:
        """Block until every deferred weight-gradient GEMM has finished."""
        with self.timer("blas_wait"):
            for fut in self._pending:
                fut.result()
            self._pending.clear()

    # ---- one window -----------------------------------------------------------------------

    def forward(self, params: Params, tokens: np.ndarray) -> tuple[np.ndarray, list[LayerActs]]:
        """Run one window through the forward kernels: the final residual stream ``[D, S]``
        and, per layer, what the backward needs (including the K/V taps a KV cache wants)."""
        cfg, d = self.config, self.dims
        S, L, alpha = d.seq, cfg.n_layers, d.res_alpha
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.shape != (S,):
            raise ValueError(f"tokens must have shape [{S}], got {list(tokens.shape)}")
        # embedding: x [D, S]
        with self.timer("elementwise"):
            x = np.ascontiguousarray(params["embed"][tokens].T)
        acts: list[LayerActs] = []
        for layer in range(L):
            lp = params.layer(layer)
            with self.timer("rmsnorm"):
                xn_t, rrms1 = rmsnorm_forward(x.T, lp.rms_att, cfg.norm_eps)
                xn = np.ascontiguousarray(xn_t.T)
            sdpa_spec = self.specs["sdpa_fwd"]
            with self.timer("io"):
                self._write(self.layer_in["sdpa_fwd"][layer], sdpa_spec.inputs["xn"], xn)
            out = self._eval("sdpa_fwd", layer)
            o = sdpa_spec.outputs
            with self.timer("io"):
                wo_in = self.layer_in["wo_fwd"][layer]
                self._copy(wo_in, self.specs["wo_fwd"].inputs["attn"], out, o["attn"])
                attn = self._read(out, o["attn"])
                qkv = out.read(o["q_rope"].ch, o["v"].ch + o["v"].channels - o["q_rope"].ch)
            o_out = self._read(self._eval("wo_fwd", layer), self.specs["wo_fwd"].outputs["o"])
            with self.timer("elementwise"):
                x2 = x + alpha * o_out
            with self.timer("rmsnorm"):
                x2n_t, rrms2 = rmsnorm_forward(x2.T, lp.rms_ffn, cfg.norm_eps)
                x2n = np.ascontiguousarray(x2n_t.T)
            ffn_spec = self.specs["ffn_fused"]
            with self.timer("io"):
                ffn_in = self.layer_in["ffn_fused"][layer]
                self._write(ffn_in, ffn_spec.inputs["x2n"], x2n)
                self._write(ffn_in, ffn_spec.inputs["x2"], x2)
            out = self._eval("ffn_fused", layer)
            fo = ffn_spec.outputs
            with self.timer("io"):
                x_next = self._read(out, fo["x_next"])
                h1, h3, gate = (self._read(out, fo[k]) for k in ("h1", "h3", "gate"))
            acts.append(LayerActs(x, xn, rrms1, attn, qkv, x2, x2n, rrms2, h1, h3, gate))
            x = x_next
        return x, acts

    def forward_backward(
        self,
        params: Params,
        grads: Params,
        tokens: np.ndarray,
        targets: np.ndarray,
        loss_scale: float = 1.0,
        grad_scale: float = 1.0,
    ) -> float:
        """Mean cross-entropy of one window; adds ``loss_scale * grad_scale * dLoss/dW`` to
        ``grads`` (deferred: call :meth:`wait` before reading them)."""
        cfg, d = self.config, self.dims
        S, L = d.seq, cfg.n_layers
        if self.forward_only:
            raise RuntimeError("this pipeline compiled only the forward kernels")
        tokens = np.asarray(tokens, dtype=np.int64)
        if np.shape(targets) != (S,):
            raise ValueError(f"tokens and targets must have shape [{S}]")
        x, acts = self.forward(params, tokens)

        # final norm, classifier over the compact vocabulary, cross-entropy
        with self.timer("rmsnorm"):
            xf_t, rrmsf = rmsnorm_forward(x.T, params["rms_final"], cfg.norm_eps)  # [S, D]
        with self.timer("classifier"):
            ids = self.vocab.rows
            cembed = params["embed"][ids]  # [CV, D] (a view when every id is used)
            logits = self._matmul(xf_t, cembed.T)  # [S, CV]
            ct = self.vocab.compact(np.asarray(targets, dtype=np.int64))
            m = logits.max(axis=1, keepdims=True)
            picked = logits[np.arange(S), ct]
            logits -= m
            dlogits = np.exp(logits, out=logits)  # [S, CV], in place
            z = dlogits.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(z[:, 0]) + m[:, 0] - picked))
            dlogits *= (loss_scale / S) / z  # softmax, scaled
            dlogits[np.arange(S), ct] -= loss_scale / S
            dxf_t = self._matmul(dlogits, cembed)  # [S, D]
            g = grad_scale
            gembed = grads["embed"]

            def classifier_dw(dl: np.ndarray = dlogits, xf: np.ndarray = xf_t) -> None:
                gembed[ids] += g * (dl.T @ xf)

            self._defer(classifier_dw)
        with self.timer("rmsnorm"):
            dx = self._rms_bwd(grads["rms_final"], dxf_t.T, x, params["rms_final"], rrmsf, g)

        for layer in reversed(range(L)):
            dx = self._layer_backward(layer, params, grads, acts[layer], dx, g)

        with self.timer("elementwise"):
            ge = grads["embed"]
            dxg = dx.T * g

            def embed_dw(t: np.ndarray = tokens, v: np.ndarray = dxg) -> None:
                np.add.at(ge, t, v)

            self._defer(embed_dw)
        return loss

    def _layer_backward(
        self, layer: int, params: Params, grads: Params, a: LayerActs, dy: np.ndarray, g: float
    ) -> np.ndarray:
        """Backward of one block; ``dy`` is dLoss/d(layer output) ``[D, S]`` (loss-scaled)."""
        d = self.dims
        alpha = d.res_alpha
        lp = params.layer(layer)
        gl = grads.layer(layer)
        spec = self.specs

        # FFN branch: x_next = x2 + alpha * W2 gate
        with self.timer("elementwise"):
            dffn = alpha * dy
        with self.timer("io"):
            self._write(
                self.layer_in["ffn_bwd_w2t"][layer], spec["ffn_bwd_w2t"].inputs["dffn"], dffn
            )
        out = self._eval("ffn_bwd_w2t", layer)
        with self.timer("io"):
            dgate = self._read(out, spec["ffn_bwd_w2t"].outputs["dgate"])
        with self.timer("elementwise"):
            sig = 1.0 / (1.0 + np.exp(-a.h1))
            dh3 = dgate * a.h1 * sig
            dh1 = dgate * a.h3 * sig * (1.0 + a.h1 * (1.0 - sig))
        w13 = spec["ffn_bwd_w13t"]
        with self.timer("io"):
            surf = self.layer_in["ffn_bwd_w13t"][layer]
            self._write(surf, w13.inputs["dh1"], dh1)
            self._write(surf, w13.inputs["dh3"], dh3)
        out = self._eval("ffn_bwd_w13t", layer)
        with self.timer("io"):
            dx2n = self._read(out, w13.outputs["dx"])

        def ffn_dw(dffn: np.ndarray = dffn, dh1: np.ndarray = dh1, dh3: np.ndarray = dh3) -> None:
            gl.w2[...] += g * (dffn @ a.gate.T)
            gl.w1[...] += g * (dh1 @ a.x2n.T)
            gl.w3[...] += g * (dh3 @ a.x2n.T)

        self._defer(ffn_dw)
        with self.timer("rmsnorm"):
            dx2 = dy + self._rms_bwd(gl.rms_ffn, dx2n, a.x2, lp.rms_ffn, a.rrms2, g)

        # attention branch: x2 = x + alpha * Wo attn
        with self.timer("elementwise"):
            do = alpha * dx2
        with self.timer("io"):
            self._write(self.layer_in["wot_bwd"][layer], spec["wot_bwd"].inputs["dx2"], do)
        out = self._eval("wot_bwd", layer)
        b1 = spec["sdpa_bwd1"]
        with self.timer("io"):
            bwd1_in = self.kernels["sdpa_bwd1"].input
            qkv = b1.inputs
            bwd1_in.write(a.qkv, qkv["q_rope"].ch)
            self._copy(bwd1_in, qkv["da"], out, spec["wot_bwd"].outputs["da"])

        def wo_dw(do: np.ndarray = do) -> None:
            gl.wo[...] += g * (do @ a.attn.T)

        self._defer(wo_dw)
        out1 = self._eval("sdpa_bwd1")
        b2 = spec["sdpa_bwd2"]
        o1 = b1.outputs
        with self.timer("io"):
            bwd2_in = self.kernels["sdpa_bwd2"].input
            bwd2_in.copy_from(
                out1, dst_ch=b2.inputs["probs"].ch, src_ch=o1["probs"].ch, channels=2 * d.score_ch
            )
            bwd2_in.write(a.qkv[: d.q_dim + d.kv_dim], b2.inputs["q_rope"].ch)
            dv = self._read(out1, o1["dv"])
        out2 = self._eval("sdpa_bwd2")
        with self.timer("io"):
            dq = self._read(out2, b2.outputs["dq"])
            dk = self._read(out2, b2.outputs["dk"])
            kv_in = self.layer_in["kv_bwd"][layer]
            self._copy(
                self.layer_in["q_bwd"][layer], spec["q_bwd"].inputs["dq"], out2, b2.outputs["dq"]
            )
            self._copy(kv_in, spec["kv_bwd"].inputs["dk"], out2, b2.outputs["dk"])
            self._copy(kv_in, spec["kv_bwd"].inputs["dv"], out1, o1["dv"])

        def qkv_dw(dq: np.ndarray = dq, dk: np.ndarray = dk, dv: np.ndarray = dv) -> None:
            gl.wq[...] += g * (dq @ a.xn.T)
            gl.wk[...] += g * (dk @ a.xn.T)
            gl.wv[...] += g * (dv @ a.xn.T)

        self._defer(qkv_dw)
        dxq = self._read(self._eval("q_bwd", layer), spec["q_bwd"].outputs["dx"])
        dxkv = self._read(self._eval("kv_bwd", layer), spec["kv_bwd"].outputs["dx"])
        with self.timer("rmsnorm"):
            dxn = dxq + dxkv
            return dx2 + self._rms_bwd(gl.rms_att, dxn, a.x, lp.rms_att, a.rrms1, g)

    @staticmethod
    def _rms_bwd(
        dw: np.ndarray, dout: np.ndarray, x: np.ndarray, w: np.ndarray, rrms: np.ndarray, g: float
    ) -> np.ndarray:
        """Channel-first RMSNorm backward; ``dw`` gets ``g`` times its gradient."""
        tmp = np.zeros_like(dw)
        dx_t = rmsnorm_backward(tmp, dout.T, x.T, w, rrms)
        dw += g * tmp
        return np.ascontiguousarray(dx_t.T)

    # ---- bookkeeping ----------------------------------------------------------------------

    def modeled_ms_per_window(self) -> float | None:
        """Performance-model ANE time of one window's kernel evals (10 per layer), or None
        when the backend reports no modeled time."""
        per_layer = [k.stats.modeled_ns for k in self.kernels.values()]
        if any(t is None for t in per_layer):
            return None
        return sum(per_layer) * self.config.n_layers / 1e6  # type: ignore[arg-type]

    def flops_per_window(self) -> int:
        """Kernel FLOPs of one forward+backward window (all layers)."""
        per_layer = sum(s.flops for s in self.specs.values())
        return per_layer * self.config.n_layers

    def close(self) -> None:
        if self._pool is not None:
            self.wait()
            self._pool.shutdown()
        if self._split is not None:
            self._split.shutdown()
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None
        for k in self.kernels.values():
            k.unload()


def _single_threaded_blas() -> object | None:
    """Limit BLAS to one thread per calling thread (None if threadpoolctl is unavailable)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=1, user_api="blas")


def used_token_ids(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Sorted ids that occur in ``tokens`` (for :class:`CompactVocab`)."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)
    return np.flatnonzero(counts)


def kernel_tflops(flops: int, seconds: float) -> float:
    return flops / seconds / 1e12 if seconds > 0 else math.nan
