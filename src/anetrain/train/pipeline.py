"""One training step through the dynamic ANE kernel pipeline.

Forward and backward-dx run in the ten kernels of :mod:`anetrain.kernels.dynamic`, each compiled
once and shared by all layers: every layer owns a pre-staged input surface per weight-bearing
kernel, bound to the kernel by its own request. The CPU parts (RMSNorm, residual adds, SwiGLU
backward, the classifier and cross-entropy, the weight gradients) are the functions of
:mod:`anetrain.model.reference`; the weight-gradient GEMMs run on a worker thread, overlapped
with kernel evaluation and waited for lazily. :meth:`DynamicPipeline._layer_forward` and
:meth:`DynamicPipeline._layer_backward` read line for line like
:func:`~anetrain.model.reference.layer_forward` / :func:`~anetrain.model.reference.layer_backward`.

Activations are channel-first ``[C, S]`` (the surface layout); weights are ``[out, in]``.
Weight gradients leave through a :class:`GradSink`; with LoRA dropout its :class:`AdapterPath`
adds the adapter terms the kernels do not (docs/lora.md, "Dropout").
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.kernels.dynamic import Dims, KernelSpec, build_kernels
from anetrain.mil.types import FP16, DType
from anetrain.model.config import ModelConfig
from anetrain.model.params import LayerParams, Params
from anetrain.model.reference import (
    crossentropy_inplace,
    matmul_backward_weight,
    qk_norm_forward,
    residual_backward,
    residual_forward,
    rmsnorm_backward,
    rmsnorm_forward,
    swiglu_backward,
)
from anetrain.runfolder import PHASES
from anetrain.train.calls import BoundKernel, PhaseTimer, Tap

FORWARD_KERNELS = ("sdpa_fwd", "wo_fwd", "ffn_fused")
# Per-layer weight surfaces above this size are not kept (stories15m: 72 MB, 110m: 815 MB).
PRESTAGE_MAX_BYTES = 256 << 20


class WeightsNotStaged(AnetrainError, RuntimeError):
    """A window was run before any weights were written into the kernels' surfaces."""


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
    qk_raw: tuple[np.ndarray, np.ndarray] | None = None  # QK-norm: q, k before it [QD|KVD, S]


@dataclass(frozen=True)
class NormGrads:
    """One layer's norm-weight gradients (None: frozen, the gradient is not accumulated)."""

    rms_att: np.ndarray | None = None  # [D]
    rms_ffn: np.ndarray | None = None  # [D]
    q_norm: np.ndarray | None = None  # [HD]
    k_norm: np.ndarray | None = None  # [HD]


class AdapterPath:
    """LoRA's adapter path where it runs beside the kernels' weights: peft's
    ``y = W x + s B A dropout(x)`` while training, where the kernels hold the base ``W``
    (:class:`anetrain.train.trainable.LoraAdapterPath`). This base adds nothing: the kernels'
    weights are the whole model (full training). Terms are ``(projection, its input or output
    gradient [C, S])``."""

    adapted: tuple[str, ...] = ()  # projections whose term the kernels add (Dims.adapted)

    def begin_window(self, timer: PhaseTimer) -> None:
        """A new window: fresh dropout masks."""

    def kernel_inputs(self, layer: int, x: np.ndarray, *names: str) -> dict[str, np.ndarray]:
        """The adapter inputs ``{name}_u = s A dropout(x)`` of a kernel's inner projections."""
        return {}

    def add(
        self, layer: int, y: np.ndarray, *terms: tuple[str, np.ndarray], scale: float = 1.0
    ) -> np.ndarray:
        """``y + scale * s B A dropout(x)`` for each ``(projection, x)`` run on the CPU."""
        return y

    def on_cpu(self, name: str) -> bool:
        """Does the CPU add ``name``'s terms (so its kernel outputs must be read)?"""
        return False

    def add_dx(self, layer: int, dx: np.ndarray, *terms: tuple[str, np.ndarray]) -> np.ndarray:
        """``dx + mask * s A^T B^T dy`` for each ``(projection, dy)``: the adapter path's
        input gradient (its dropout mask, scaled by ``1/(1-p)``, applied)."""
        return dx

    def dropped(self, layer: int, name: str, x: np.ndarray) -> np.ndarray:
        """The input the adapter of ``name`` saw: ``dropout(x)`` with the window's mask."""
        return x


NO_ADAPTER_PATH = AdapterPath()


class GradSink:
    """Where the backward's weight gradients go: here every parameter of ``grads`` (full
    training). LoRA replaces it (:class:`anetrain.train.trainable.LoraGrads`): the same
    activations and output gradients, adapter gradients instead of frozen ``dW``s. With LoRA
    dropout its ``path`` adds the adapter terms the kernels do not."""

    path: AdapterPath = NO_ADAPTER_PATH

    def __init__(self, grads: Params) -> None:
        self.grads = grads

    @property
    def flat(self) -> np.ndarray:
        """The one flat buffer every gradient accumulates into."""
        return self.grads.flat

    def matmul(self, layer: int, name: str, dout: np.ndarray, x: np.ndarray, g: float) -> None:
        """``d name[layer] += g * dout @ x^T`` for a projection ``dout [OUT, S]``, ``x [IN, S]``
        (runs on the worker thread)."""
        matmul_backward_weight(self.grads[name][layer], dout.T, x.T, g)

    def norms(self, layer: int) -> NormGrads:
        p = self.grads.layer(layer)
        return NormGrads(p.rms_att, p.rms_ffn, p.q_norm, p.k_norm)

    def tensor(self, name: str) -> np.ndarray | None:
        """The gradient of ``embed``, ``rms_final`` or the classifier (None when frozen)."""
        return self.grads.classifier if name == "classifier" else self.grads[name]


@dataclass(frozen=True)
class _Deferred:
    """A job on the weight-gradient worker (see :meth:`KernelPipeline._defer`)."""

    future: Future[None]
    run: Callable[[], None]
    writes: set[tuple[str, int]] | None


def _succeeded(future: Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class CompactVocab:
    """Classifier rows for the token ids the data uses: the softmax runs over the used
    vocabulary only (as maderix/ANE does), which makes a 32K (or 152K) classifier affordable."""

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


class KernelPipeline:
    """What every kernel pipeline shares: the CPU parts of a window (embedding, final norm,
    classifier and cross-entropy, the deferred weight-gradient GEMMs), the step's phase timer
    and the BLAS threads. A subclass compiles its kernels and implements
    :meth:`stage_weights`, :meth:`_layer_forward` and :meth:`_layer_backward`."""

    compiles_per_stage = 0  # compiles a stage_weights call does (static pipelines recompile)

    def __init__(
        self,
        config: ModelConfig,
        *,
        backend: str | runtime.Backend = "sim",
        chip: str | None = None,
        dtype: DType = FP16,
        used_ids: np.ndarray | None = None,
        overlap_blas: bool = True,
    ) -> None:
        be = backend if isinstance(backend, runtime.Backend) else runtime.get_backend(backend, chip)
        self.backend = be
        self.config = config
        self.dims = Dims.from_config(config, dtype, be.chip.dialect)
        self.vocab = CompactVocab(used_ids, config.vocab_size)
        self.timer = PhaseTimer(PHASES)
        self.specs: dict[str, KernelSpec] = {}
        self.kernels: dict[str, runtime.Kernel] = {}
        self.compile_s = 0.0  # all compiles so far (seconds)
        self.staged = False
        self._g = 1.0  # grad_scale of the window in flight
        self._path = NO_ADAPTER_PATH  # the window's adapter path (its sink's)
        # Two cores, two threads of BLAS work: the main thread (kernels, classifier) and one
        # worker (weight gradients), each with single-threaded BLAS so they never oversubscribe.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dw") if overlap_blas else None
        self._split = ThreadPoolExecutor(1, thread_name_prefix="mm") if overlap_blas else None
        self._pending: list[Future[None]] = []
        self._staging: list[Future[None]] = []  # per layer: its weights being written
        self._blas_limits = _SINGLE_THREADED_BLAS.acquire() if overlap_blas else False

    def _compile(self, spec: KernelSpec, weights: dict[str, bytes], name: str) -> runtime.Kernel:
        """Compile one kernel, its time counted in :attr:`compile_s`."""
        start = time.perf_counter()
        kernel = self.backend.compile(spec.model.program, weights, name=name)
        self.compile_s += time.perf_counter() - start
        self.kernels[name] = kernel
        return kernel

    def stage_weights(self, params: Params | Any, only: Collection[str] | None = None) -> None:
        """Make the kernels compute with ``params`` (after init and each update); ``only``
        may restrict it to these parameters (what an update changed)."""
        raise NotImplementedError

    def window_evals(self) -> list[tuple[KernelSpec, int]]:
        """Each kernel spec and how often one window evaluates it."""
        raise NotImplementedError

    # ---- CPU work ---------------------------------------------------------------------------

    def _rmsnorm(self, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Channel-first RMSNorm: x [D, S] -> out [D, S], rrms [S, 1]."""
        with self.timer("rmsnorm"):
            out_t, rrms = rmsnorm_forward(x.T, w, self.config.norm_eps)
            return np.ascontiguousarray(out_t.T), rrms

    def _rmsnorm_backward(
        self,
        dw: np.ndarray | None,
        dout: np.ndarray,
        x: np.ndarray,
        w: np.ndarray,
        rrms: np.ndarray,
    ) -> np.ndarray:
        """Channel-first RMSNorm backward; ``dw`` gets ``grad_scale`` times its gradient."""
        with self.timer("rmsnorm"):
            tmp = np.zeros_like(w, dtype=np.float32)
            dx_t = rmsnorm_backward(tmp, dout.T, x.T, w, rrms)
            if dw is not None:
                dw += self._g * tmp
            return np.ascontiguousarray(dx_t.T)

    def _qk_norm_backward(
        self, dw: np.ndarray | None, dout: np.ndarray, raw: np.ndarray, w: np.ndarray
    ) -> np.ndarray:
        """Per-head RMSNorm backward, channel-first: dout, raw [heads*HD, S] -> d raw; ``dw``
        [HD] gets ``grad_scale`` times its gradient (rrms recomputed from the raw tap)."""
        HD, S = self.dims.head_dim, raw.shape[1]
        with self.timer("rmsnorm"):
            x = raw.T.reshape(S, -1, HD)  # [S,heads,HD]
            _, rrms = qk_norm_forward(x, w, self.config)  # [S,heads,1]
            tmp = np.zeros_like(w, dtype=np.float32)
            dx = rmsnorm_backward(tmp, dout.T.reshape(x.shape), x, w, rrms)  # [S,heads,HD]
            if dw is not None:
                dw += self._g * tmp
            return np.ascontiguousarray(dx.reshape(S, -1).T)

    def _elementwise(self, fn: Callable[..., object], *args: object) -> object:
        return self.timer.run("elementwise", fn, *args)

    def _dw(self, layer: int, *terms: tuple[str, np.ndarray, np.ndarray]) -> None:
        """Deferred weight gradients per ``(param, dout [OUT, S], x [IN, S])`` into the sink
        (``d param += grad_scale * dout @ x^T`` when training every weight); with LoRA dropout
        the sink gets ``x`` as the adapter saw it, dropped with this window's mask."""
        g, sink, path = self._g, self._sink, self._path
        terms = tuple((name, dout, path.dropped(layer, name, x)) for name, dout, x in terms)

        def run() -> None:
            for name, dout, x in terms:
                sink.matmul(layer, name, dout, x, g)

        self._defer(run, writes={(name, layer) for name, _, _ in terms})

    def _matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` split in two over the main thread and a helper thread (each with
        single-threaded BLAS): the classifier GEMMs are the largest of the step."""
        rows, cols = a.shape[0], b.shape[1]
        if self._split is None or rows * cols * a.shape[1] < 1 << 26:
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

    def _crossentropy(
        self, logits: np.ndarray, targets: np.ndarray, dloss: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`crossentropy_inplace` with its rows split over the two threads (every row is
        computed on its own, so the result is the same to the bit)."""
        rows = logits.shape[0]
        if self._split is None or logits.size < 1 << 20:
            return crossentropy_inplace(logits, targets, dloss)
        h = rows // 2
        fut = self._split.submit(crossentropy_inplace, logits[h:], targets[h:], dloss)
        top, _ = crossentropy_inplace(logits[:h], targets[:h], dloss)
        bottom, _ = fut.result()
        return np.concatenate([top, bottom]), logits

    @staticmethod
    def _tensor_key(sink: GradSink, name: str) -> tuple[str, int]:
        """What :meth:`_defer` calls the gradient of ``embed`` or the classifier (one key when
        the classifier is the tied embedding)."""
        a, b = sink.tensor("classifier"), sink.tensor("embed")
        tied = name == "classifier" and a is not None and b is not None
        tied = tied and np.may_share_memory(a, b)
        return ("embed" if tied else name, -1)

    def _defer(self, fn: Callable[[], None], writes: set[tuple[str, int]] | None = None) -> None:
        """Run ``fn`` on the worker, in order. ``writes``: the gradients it accumulates into
        (then :meth:`wait` may run it on the main thread instead); None: it must follow
        everything queued before it (e.g. a data-parallel hook)."""
        if self._pool is None:
            fn()
            return
        # jobs that finished go (an error stays for wait to raise): a job holds its closure,
        # and with it the activations and output gradients it read (stories110m: 8.5 MB per
        # layer, which kept every layer's until the end of the backward)
        self._pending = [job for job in self._pending if not _succeeded(job.future)]
        self._pending.append(_Deferred(self._pool.submit(fn), fn, writes))

    def _await_staging(self, layer: int | None = None) -> None:
        """Block until ``layer``'s weights (None: every layer's) sit in their surfaces."""
        for job in self._staging if layer is None else self._staging[layer : layer + 1]:
            job.result()
        if layer is None:
            self._staging.clear()

    def wait(self) -> None:
        """Block until every deferred weight-gradient GEMM (and weight staging) has finished.

        Rather than idle, the main thread takes queued GEMMs the worker has not started, from
        the back of the queue (the worker runs it from the front): only those whose gradients
        no other unfinished job writes, so no accumulation changes order, and none while a
        job that must follow everything before it is pending. The same arithmetic on another
        thread gives the same bits."""
        self._await_staging()
        with self.timer("blas_wait"):
            self._take_queued()
            for job in self._pending:
                if not job.future.cancelled():
                    job.future.result()
            self._pending.clear()

    def _take_queued(self) -> None:
        jobs = [job for job in self._pending if not job.future.done()]
        if any(job.writes is None for job in jobs):
            return
        count = Counter(key for job in jobs for key in job.writes or ())
        for job in reversed(jobs):
            alone = all(count[key] == 1 for key in job.writes or ())
            if alone and job.future.cancel():  # still queued: now it never runs there
                job.run()

    # ---- one window -----------------------------------------------------------------------

    def forward(self, params: Params, tokens: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """Run one window through the forward kernels: the final residual stream ``[D, S]``
        and, per layer, what the backward needs."""
        S = self.dims.seq
        if not self.staged:
            raise WeightsNotStaged(
                "no weights in the kernels yet; call stage_weights(params) "
                "before running a window (and again after every update)"
            )
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.shape != (S,):
            raise ValueError(f"tokens must have shape [{S}], got {list(tokens.shape)}")
        with self.timer("elementwise"):
            x = np.ascontiguousarray(params["embed"][tokens].T, dtype=np.float32)  # [D, S]
        acts: list[Any] = []
        for layer in range(self.config.n_layers):
            self._await_staging(layer)  # staged on the worker while the layers before ran
            x, a = self._layer_forward(layer, params.layer(layer), x)
            acts.append(a)
        self._await_staging()
        return x, acts

    def _layer_forward(self, layer: int, p: LayerParams, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _layer_backward(
        self, layer: int, p: LayerParams, dp: NormGrads, a: Any, dx_next: np.ndarray
    ) -> np.ndarray:
        raise NotImplementedError

    def forward_backward(
        self,
        params: Params,
        grads: Params | GradSink,
        tokens: np.ndarray,
        targets: np.ndarray,
        loss_scale: float = 1.0,
        grad_scale: float = 1.0,
        grads_done: Callable[[int | None], None] | None = None,
    ) -> float:
        """Mean cross-entropy of one window; adds ``loss_scale * grad_scale * dLoss/dW`` to
        ``grads`` (a :class:`GradSink`, or the Params of every weight's gradient; deferred: call
        :meth:`wait` before reading them). ``params`` may be fp16 (a frozen LoRA base).
        ``grads_done(layer)`` runs on the weight-gradient thread once a layer's gradients are
        added, then ``grads_done(None)`` once the embedding's and final norm's are (data
        parallelism starts summing them across ranks there, while the backward goes on)."""
        S = self.dims.seq
        tokens = np.asarray(tokens, dtype=np.int64)
        if np.shape(targets) != (S,):
            raise ValueError(f"tokens and targets must have shape [{S}]")
        self._g = grad_scale
        self._sink = sink = grads if isinstance(grads, GradSink) else GradSink(grads)
        if sink.path.adapted != self.dims.adapted:
            raise ValueError(
                f"the kernels add the adapter terms of {self.dims.adapted}, the sink's adapter "
                f"path expects {sink.path.adapted}: build the pipeline with "
                "adapters=trainable.kernel_adapters"
            )
        self._path = sink.path  # the forward's adapter terms (a training window's)
        sink.path.begin_window(self.timer)
        x, acts = self.forward(params, tokens)
        ct = self.vocab.compact(np.asarray(targets, dtype=np.int64))
        losses, dx = self._head_forward_backward(params, sink, x, ct, loss_scale / S)
        for layer in reversed(range(self.config.n_layers)):
            dx = self._layer_backward(
                layer, params.layer(layer), sink.norms(layer), acts[layer], dx
            )
            if grads_done is not None:
                self._defer(lambda layer=layer: grads_done(layer))
        with self.timer("elementwise"):
            ge = sink.tensor("embed")
            dxg = dx.T * grad_scale

            def embed_dw(t: np.ndarray = tokens, v: np.ndarray = dxg) -> None:
                np.add.at(ge, t, v)

            if ge is not None:
                self._defer(embed_dw, writes={self._tensor_key(sink, "embed")})
        if grads_done is not None:
            self._defer(lambda: grads_done(None))
        return float(np.mean(losses))

    def _head_forward_backward(
        self, params: Params, sink: GradSink, x: np.ndarray, ct: np.ndarray, dloss: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Final norm, classifier over the compact vocabulary and the fused softmax + CE
        backward on the CPU: x [D,S], compact targets [S] -> losses [S], dx [D,S]."""
        xf, rrmsf = self._rmsnorm(x, params["rms_final"])  # [D,S], [S,1]
        with self.timer("classifier"):
            ids = self.vocab.rows
            cembed = params.classifier[ids].astype(np.float32, copy=False)  # [CV,D] (a view
            # when every id is used and the weights are fp32)
            xf_t = xf.T  # [S,D]
            logits = self._matmul(xf_t, cembed.T)  # [S,CV]
            losses, dlogits = self._crossentropy(logits, ct, dloss)  # [S], [S,CV]
            dxf = self._classifier_backward(sink, dlogits, cembed, xf_t)  # [D,S]
        dx = self._rmsnorm_backward(sink.tensor("rms_final"), dxf, x, params["rms_final"], rrmsf)
        return losses, dx

    def _classifier_backward(
        self, sink: GradSink, dlogits: np.ndarray, cembed: np.ndarray, xf_t: np.ndarray
    ) -> np.ndarray:
        """dlogits [S,CV] -> dxf [D,S]; the embedding's gradient deferred (none when frozen)."""
        ids, g, gembed = self.vocab.rows, self._g, sink.tensor("classifier")
        if gembed is None:  # frozen: the worker is free to take half of the dx GEMM
            return self._matmul(dlogits, cembed).T  # [D,S]

        def classifier_dw(dl: np.ndarray = dlogits, xf: np.ndarray = xf_t) -> None:
            _add_scaled_rows(gembed, ids, dl.T @ xf, g)  # [CV,D]

        # queued first, so the worker's dW GEMM runs beside this thread's dx GEMM (the two
        # largest of the backward, one per core) instead of after it
        self._defer(classifier_dw, writes={self._tensor_key(sink, "classifier")})
        return (dlogits @ cembed).T  # [D,S]

    # ---- bookkeeping ----------------------------------------------------------------------

    def release_memory(self) -> int:
        """Give back what holds nothing between windows (after :meth:`wait`): the kernels'
        scratch and intermediate values, and inputs that every call rewrites; returns the
        bytes. The trainer does it for large models before the optimizer step, when the Adam
        moments come in."""
        return sum(kernel.release_memory() for kernel in self.kernels.values())

    def flops_per_window(self) -> int:
        """Kernel FLOPs of one forward+backward window (all layers)."""
        return sum(spec.flops * n for spec, n in self.window_evals())

    def close(self) -> None:
        self._await_staging()
        if self._pool is not None:
            self.wait()
            self._pool.shutdown()
        if self._split is not None:
            self._split.shutdown()
        if self._blas_limits:
            _SINGLE_THREADED_BLAS.release()
            self._blas_limits = False
        for kernel in self.kernels.values():
            kernel.unload()


class DynamicPipeline(KernelPipeline):
    """Compiles the ten kernels once and runs forward+backward for one ``[S]`` window."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        forward_only: bool = False,
        prestage: bool | None = None,
        adapters: tuple[tuple[str, ...], int] = ((), 0),
        **common: Any,
    ) -> None:
        """``common``: :class:`KernelPipeline`'s keywords (backend, chip, dtype, used_ids,
        overlap_blas). ``prestage``: keep one input surface per layer and kernel with the
        weights staged in it (None: when those surfaces take at most ``PRESTAGE_MAX_BYTES``).
        ``adapters``: the projections whose LoRA term the kernels add, and its rank (LoRA with
        dropout: ``LoraTrainable.kernel_adapters``)."""
        super().__init__(config, **common)
        self.dims = replace(self.dims, adapted=adapters[0], adapter_rank=adapters[1])
        self.forward_only = forward_only  # compile just the three forward kernels (prefill)
        self.specs = {
            name: spec
            for name, spec in build_kernels(self.dims).items()
            if not forward_only or name in FORWARD_KERNELS
        }
        for name, spec in self.specs.items():
            self._compile(spec, spec.model.weights, name)
        # weight-bearing kernels get one input surface per layer (staged once per update), the
        # others use their own; unless those surfaces would be large: then each call writes its
        # layer's weights into the kernel's own input surface
        layer_bytes = sum(4 * math.prod(s.in_shape) for s in self.specs.values() if s.weights)
        if prestage is None:
            prestage = config.n_layers * layer_bytes <= PRESTAGE_MAX_BYTES
        self.prestage = prestage
        self.k = {
            name: BoundKernel(
                spec,
                self.kernels[name],
                self.timer,
                config.n_layers * bool(spec.weights),
                prestage=prestage,
            )
            for name, spec in self.specs.items()
        }
        self._qk = self.specs["sdpa_fwd"].span_part("qkv", "q_rope", "k_rope")  # of LayerActs.qkv

    def stage_weights(self, params: Params | Any, only: Collection[str] | None = None) -> None:
        """Write every layer's weights into its input surfaces (after init and each update);
        ``only`` restricts it to the regions of these parameters (what an update changed).

        With prestaged surfaces and the worker thread, the writes run there, one job per layer,
        while the next window's forward runs the layers before (the worker is idle then; the
        values written are the same): ``params`` must not change until that forward, or
        :meth:`wait`, has run."""
        self._await_staging()
        bounds = [b for b in self.k.values() if b.spec.weights]
        if self._pool is None or not self.prestage:
            for bound in bounds:
                bound.stage(params, only)
        else:
            for layer in range(self.config.n_layers):
                job = self._pool.submit(_stage_layer, bounds, params, only, layer)
                self._staging.append(job)
        self.staged = True

    def window_evals(self) -> list[tuple[KernelSpec, int]]:
        return [(spec, self.config.n_layers) for spec in self.specs.values()]

    def release_memory(self) -> int:
        return sum(bound.release_memory() for bound in self.k.values())

    def forward_backward(self, *args: Any, **kwargs: Any) -> float:
        if self.forward_only:
            raise RuntimeError("this pipeline compiled only the forward kernels")
        return super().forward_backward(*args, **kwargs)

    def _layer_forward(
        self, layer: int, p: LayerParams, x: np.ndarray
    ) -> tuple[np.ndarray, LayerActs]:
        """One block, as :func:`reference.layer_forward`. x [D, S] -> x_next [D, S]."""
        k, alpha, ad = self.k, self.dims.res_alpha, self._path
        # attention rmsnorm
        xn, rrms1 = self._rmsnorm(x, p.rms_att)  # [D,S], [S,1]
        # qkv projections (+ LoRA-dropout terms), RoPE, causal GQA attention (one kernel)
        att = k["sdpa_fwd"](layer, xn=xn, **ad.kernel_inputs(layer, xn, "wq", "wk", "wv"))
        attn = att["attn"]  # [QD,S]; taps qkv [QD+2KVD,S]
        # output projection (+ its LoRA-dropout term), residual
        o = ad.add(layer, k["wo_fwd"](layer, attn=att.tap("attn"))["o"], ("wo", attn))  # [D,S]
        x2 = self._elementwise(residual_forward, x, o, alpha)  # [D,S]
        # ffn rmsnorm, SwiGLU (+ gate/up LoRA-dropout terms), residual (one kernel)
        x2n, rrms2 = self._rmsnorm(x2, p.rms_ffn)  # [D,S], [S,1]
        ffn = k["ffn_fused"](layer, x2n=x2n, x2=x2, **ad.kernel_inputs(layer, x2n, "w1", "w3"))
        gate = ffn["gate"]  # [H,S]; taps h1, h3 [H,S]
        x_next = ad.add(layer, ffn["x_next"], ("w2", gate), scale=alpha)  # [D,S] (+ down's)
        qk_raw = (att["q_raw"], att["k_raw"]) if self.config.qk_norm else None  # [QD|KVD,S]
        acts = LayerActs(x, xn, rrms1, attn, att["qkv"], x2, x2n, rrms2, ffn["h1"], ffn["h3"], gate)
        acts.qk_raw = qk_raw
        return x_next, acts

    def _layer_backward(
        self, layer: int, p: LayerParams, dp: NormGrads, a: LayerActs, dx_next: np.ndarray
    ) -> np.ndarray:
        """The same list as :meth:`_layer_forward`, reversed, as :func:`reference.layer_backward`.
        dx_next [D, S] (loss-scaled) -> dx [D, S]; weight gradients are deferred."""
        k, alpha, ad = self.k, self.dims.res_alpha, self._path
        # ffn branch
        dx2, dffn = self._elementwise(residual_backward, dx_next, alpha)  # [D,S] each
        dgate = k["ffn_bwd_w2t"](layer, dffn=dffn)["dgate"]  # [H,S] W2^T dffn
        dgate = ad.add_dx(layer, dgate, ("w2", dffn))  # (+ down's LoRA-dropout term)
        dh1, dh3 = self._elementwise(swiglu_backward, dgate, a.h1, a.h3)  # [H,S] each
        dx2n = k["ffn_bwd_w13t"](layer, dh1=dh1, dh3=dh3)["dx2n"]  # [D,S] W1^T dh1 + W3^T dh3
        dx2n = ad.add_dx(layer, dx2n, ("w1", dh1), ("w3", dh3))
        self._dw(layer, ("w2", dffn, a.gate), ("w1", dh1, a.x2n), ("w3", dh3, a.x2n))
        dx2 = dx2 + self._rmsnorm_backward(dp.rms_ffn, dx2n, a.x2, p.rms_ffn, a.rrms2)  # [D,S]
        # attention branch
        dx, dattn = self._elementwise(residual_backward, dx2, alpha)  # [D,S] each
        wot = k["wot_bwd"](layer, dattn=dattn)  # dao [QD,S] Wo^T dattn, copied on as a tap
        dao = ad.add_dx(layer, wot["dao"], ("wo", dattn)) if ad.on_cpu("wo") else wot.tap("dao")
        self._dw(layer, ("wo", dattn, a.attn))
        b1 = k["sdpa_bwd1"](qkv=a.qkv, dao=dao)  # dv [KVD,S]; scores (probs, dp) [2*NH*S,S]
        b2 = k["sdpa_bwd2"](scores=b1.tap("scores"), qk=a.qkv[self._qk])  # dq, dk pre-RoPE
        dq, dk, dv = b2["dq"], b2["dk"], b1["dv"]  # [QD,S], [KVD,S], [KVD,S]
        dq_in: np.ndarray | Tap = b2.tap("dq")
        dk_in: np.ndarray | Tap = b2.tap("dk")
        if a.qk_raw is not None:  # QK-norm backward: gradients of the raw projections
            dq = dq_in = self._qk_norm_backward(dp.q_norm, dq, a.qk_raw[0], p.q_norm)  # [QD,S]
            dk = dk_in = self._qk_norm_backward(dp.k_norm, dk, a.qk_raw[1], p.k_norm)  # [KVD,S]
        self._dw(layer, ("wq", dq, a.xn), ("wk", dk, a.xn), ("wv", dv, a.xn))
        dxn = k["q_bwd"](layer, dq=dq_in)["dxn_q"]  # [D,S] Wq^T dq
        dxn += k["kv_bwd"](layer, dk=dk_in, dv=b1.tap("dv"))["dxn_kv"]  # Wk^T dk + Wv^T dv
        dxn = ad.add_dx(layer, dxn, ("wq", dq), ("wk", dk), ("wv", dv))
        return dx + self._rmsnorm_backward(dp.rms_att, dxn, a.x, p.rms_att, a.rrms1)  # [D,S]


class _SingleThreadedBlas:
    """One BLAS thread per calling thread while any pipeline with a worker is open: counted,
    so closing one pipeline does not lift the limit under another still running (its GEMMs
    would oversubscribe the cores and, BLAS results depending on the thread count, change
    bits). Without threadpoolctl nothing is limited."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limits: Any = None

    def acquire(self) -> bool:
        with self._lock:
            if self._users == 0:
                try:
                    from threadpoolctl import threadpool_limits
                except ImportError:
                    return False
                self._limits = threadpool_limits(limits=1, user_api="blas")
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limits is not None:
                self._limits.restore_original_limits()
                self._limits = None


_SINGLE_THREADED_BLAS = _SingleThreadedBlas()


def _add_scaled_rows(
    dst: np.ndarray, rows: slice | np.ndarray, src: np.ndarray, g: float, block: int = 2048
) -> None:
    """``dst[rows] += g * src`` a block of rows at a time, so each block is scaled and added
    while it sits in cache (the same two operations per element, so the same bits)."""
    for lo in range(0, src.shape[0], block):
        part = src[lo : lo + block]
        part *= g
        if isinstance(rows, slice):
            dst[lo : lo + block] += part
        else:
            dst[rows[lo : lo + block]] += part


def _stage_layer(
    bounds: list[BoundKernel], params: Params | Any, only: Collection[str] | None, layer: int
) -> None:
    for bound in bounds:
        bound.stage_layer(params, layer, only)


def used_token_ids(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Sorted ids that occur in ``tokens`` (for :class:`CompactVocab`)."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)
    return np.flatnonzero(counts)
