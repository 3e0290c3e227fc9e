"""One training step through the static kernels (weights baked in, recompiled per update).

Every layer compiles its own :mod:`anetrain.kernels.static` kernels, so each keeps its forward
taps in its own output surface; the backward kernels copy them surface to surface (the
original's ``io_copy``) instead of the CPU writing them back. :meth:`stage_weights` is a
recompile of every weight-bearing kernel (``compiles_per_stage`` of them); the weight-free
ones compile once. The CPU parts are the functions of :mod:`anetrain.model.reference`, as in
the dynamic pipeline; :meth:`StaticPipeline._layer_forward` and
:meth:`StaticPipeline._layer_backward` read like
:func:`~anetrain.model.reference.layer_forward` / :func:`~anetrain.model.reference.layer_backward`.

With ``extras`` the final RMSNorm, the classifier, the vocabulary softmax and the per-layer
RMSNorm backward (dx) run on kernels too; the classifier backward, the loss from the kernel's
probabilities and every weight gradient stay on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from anetrain.kernels import static
from anetrain.kernels.dynamic import KernelSpec
from anetrain.model.config import ModelConfig
from anetrain.model.params import LayerParams, Params
from anetrain.model.reference import (
    crossentropy_from_probs,
    crossentropy_softmax_backward,
    residual_backward,
    residual_forward,
    rmsnorm_backward_weight,
    rmsnorm_rrms,
)
from anetrain.train.calls import BoundKernel, Outputs, Tap
from anetrain.train.pipeline import GradSink, KernelPipeline, NormGrads


@dataclass
class StaticActs:
    """What the forward keeps for one layer's backward: the CPU's fp32 tensors and the two
    forward kernels' outputs, whose taps stay in the layer's own surfaces."""

    x: np.ndarray  # [D, S] layer input
    x2: np.ndarray  # [D, S] after the attention residual
    attn: Outputs  # fwd_attn: o, q_rope, k_rope, v, attn, xn
    ffn: Outputs  # fwd_ffn: ffn, h1, h3, gate, x2n


class StaticPipeline(KernelPipeline):
    """Per-layer kernels with baked weights: 5 weight-bearing + 1 weight-free per layer
    (72 kernels for 12 layers); with ``extras`` 2 more per layer, 2 model-wide and a
    weight-free softmax (99 for 12 layers)."""

    def __init__(self, config: ModelConfig, *, extras: bool = False, **common: Any) -> None:
        """``common``: :class:`KernelPipeline`'s keywords (backend, chip, dtype, used_ids,
        overlap_blas)."""
        super().__init__(config, **common)
        self.extras = extras
        self.specs = static.build_static_kernels(
            self.dims,
            extras=extras,
            vocab_rows=self.vocab.ids,
            classifier_param="embed" if config.tied_embeddings else "lm_head",
        )
        L = config.n_layers
        per_batch, once = static.compile_plan(self.specs, L)
        self.compiles_per_stage = len(per_batch)
        self._baked = sorted(set(per_batch), key=per_batch.index)  # names, in build order
        # bound kernels per name; index = layer (a model-wide kernel: one entry)
        self.k: dict[str, list[BoundKernel]] = {}
        for name in sorted(set(once), key=once.index):
            weights = self.specs[name].model.weights
            self.k[name] = [self._bind(name, weights, i) for i in self._layers(name)]

    def _layers(self, name: str) -> list[int | None]:
        """The layers kernel ``name`` is compiled for (None: once for the model)."""
        return list(range(self.config.n_layers)) if name in static.PER_LAYER else [None]

    def _bind(self, name: str, weights: dict[str, bytes], layer: int | None) -> BoundKernel:
        spec = self.specs[name]
        key = name if layer is None else f"{name}[{layer}]"
        old = self.kernels.pop(key, None)
        if old is not None:
            old.unload()
        return BoundKernel(spec, self._compile(spec, weights, key), self.timer)

    def stage_weights(self, params: Params, only: Collection[str] | None = None) -> None:
        """Recompile every weight-bearing kernel with ``params`` baked in (writing the weight
        blobs counts as compile time too); ``only`` is ignored: every baked kernel holds
        several weights, so each recompiles."""
        start, compiled = time.perf_counter(), self.compile_s
        dtype = self.dims.dtype.numpy
        for name in self._baked:
            spec = self.specs[name]
            self.k[name] = [
                self._bind(name, static.bake(spec, params, i, dtype), i) for i in self._layers(name)
            ]
        self.staged = True
        self.compile_s = compiled + time.perf_counter() - start

    def window_evals(self) -> list[tuple[KernelSpec, int]]:
        return [(s, len(self._layers(name))) for name, s in self.specs.items()]

    # ---- one layer -------------------------------------------------------------------------

    def _layer_forward(
        self, layer: int, p: LayerParams, x: np.ndarray
    ) -> tuple[np.ndarray, StaticActs]:
        """One block, as :func:`reference.layer_forward`. x [D, S] -> x_next [D, S]."""
        k, alpha = self.k, self.dims.res_alpha
        # attention rmsnorm, qkv projections, RoPE, causal GQA attention, Wo (one kernel)
        att = k["fwd_attn"][layer](x=x)  # o [D,S]; taps qkv, attn [QD,S], xn [D,S]
        x2 = self._elementwise(residual_forward, x, att["o"], alpha)  # [D,S]
        # ffn rmsnorm, SwiGLU, W2 (one kernel)
        ffn = k["fwd_ffn"][layer](x2=x2)  # ffn [D,S]; taps h1, h3, gate [H,S], x2n [D,S]
        x_next = self._elementwise(residual_forward, x2, ffn["ffn"], alpha)  # [D,S]
        return x_next, StaticActs(x, x2, att, ffn)

    def _layer_backward(
        self, layer: int, p: LayerParams, dp: NormGrads, a: StaticActs, dx_next: np.ndarray
    ) -> np.ndarray:
        """The same list as :meth:`_layer_forward`, reversed, as :func:`reference.layer_backward`.
        dx_next [D, S] (loss-scaled) -> dx [D, S]; weight gradients are deferred."""
        k, alpha = self.k, self.dims.res_alpha
        # ffn branch: W2^T, SwiGLU backward, W1^T + W3^T (one kernel)
        dx2, dffn = self._elementwise(residual_backward, dx_next, alpha)  # [D,S] each
        fb = k["ffn_bwd"][layer](dffn=dffn, h13=a.ffn.tap("h13"))  # dx2n [D,S]; dh1, dh3 [H,S]
        dh1, dh3, x2n = fb["dh1"], fb["dh3"], a.ffn["x2n"]
        self._dw(layer, ("w2", dffn, a.ffn["gate"]), ("w1", dh1, x2n), ("w3", dh3, x2n))
        dx2 = dx2 + self._rms_bwd(layer, "rms_ffn_bwd", dp.rms_ffn, fb, "dx2n", a.x2, p.rms_ffn)
        # attention branch: Wo^T and the attention backward (two kernels), Wq^T + Wk^T + Wv^T
        dx, dattn = self._elementwise(residual_backward, dx2, alpha)  # [D,S] each
        b1 = k["sdpa_bwd1"][layer](qkv=a.attn.tap("qkv"), dattn=dattn)  # dv [KVD,S]; scores
        self._dw(layer, ("wo", dattn, a.attn["attn"]))
        b2 = k["sdpa_bwd2"][layer](scores=b1.tap("scores"), qk=a.attn.tap("qk"))  # dq, dk
        xn, dq, dk = a.attn["xn"], b2["dq"], b2["dk"]  # [D,S], [QD,S], [KVD,S]
        dq_in: np.ndarray | Tap = b2.tap("dq")
        dk_in: np.ndarray | Tap = b2.tap("dk")
        if self.config.qk_norm:  # QK-norm backward: gradients of the raw projections
            dq = dq_in = self._qk_norm_backward(dp.q_norm, dq, a.attn["q_raw"], p.q_norm)
            dk = dk_in = self._qk_norm_backward(dp.k_norm, dk, a.attn["k_raw"], p.k_norm)
        self._dw(layer, ("wq", dq, xn), ("wk", dk, xn), ("wv", b1["dv"], xn))
        qb = k["qkv_bwd"][layer](dq=dq_in, dk=dk_in, dv=b1.tap("dv"))  # dxn [D,S]
        return dx + self._rms_bwd(layer, "rms_att_bwd", dp.rms_att, qb, "dxn", a.x, p.rms_att)

    def _rms_bwd(
        self,
        layer: int,
        kernel: str,
        dw: np.ndarray | None,
        out: Outputs,
        dy: str,
        x: np.ndarray,
        w: np.ndarray,
    ) -> np.ndarray:
        """:func:`reference.rmsnorm_backward` of the output block ``dy`` of ``out``: the dx half
        on the ``kernel`` (extras) or all of it on the CPU; dw += grad_scale * its gradient."""
        if not self.extras:
            with self.timer("rmsnorm"):
                rrms = rmsnorm_rrms(x.T, self.config.norm_eps)  # [S,1]
            return self._rmsnorm_backward(dw, out[dy], x, w, rrms)
        dx = self.k[kernel][layer](dy=out.tap(dy), x=x)["dx"]  # [D,S]
        with self.timer("rmsnorm"):
            rrms = rmsnorm_rrms(x.T, self.config.norm_eps)  # [S,1]
            if dw is not None:
                rmsnorm_backward_weight(dw, out[dy].T, x.T, rrms, self._g)
        return dx

    # ---- the head --------------------------------------------------------------------------

    def _head_forward_backward(
        self, params: Params, sink: GradSink, x: np.ndarray, ct: np.ndarray, dloss: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The extras run the final RMSNorm, classifier and softmax on kernels; the loss, its
        gradient, the classifier backward and the final RMSNorm backward stay on the CPU."""
        if not self.extras:
            return super()._head_forward_backward(params, sink, x, ct, dloss)
        k = self.k
        xf = k["final_rms"][0](x=x)  # xf [D,S]
        logits = k["classifier"][0](xf=xf.tap("xf"))  # [CV,S]
        sm = k["softmax"][0](logits=logits.tap("logits"))  # probs [CV,S]
        with self.timer("classifier"):
            probs_t = sm["probs"].T  # [S,CV]
            losses = crossentropy_from_probs(probs_t, ct)  # [S]
            dlogits = crossentropy_softmax_backward(
                np.full(ct.shape, dloss, np.float32), probs_t, ct
            )
            cembed = params.classifier[self.vocab.rows]  # [CV,D]
            dxf = self._classifier_backward(sink, dlogits, cembed, xf["xf"].T)  # [D,S]
        with self.timer("rmsnorm"):
            rrmsf = rmsnorm_rrms(x.T, self.config.norm_eps)  # [S,1]
        dx = self._rmsnorm_backward(sink.tensor("rms_final"), dxf, x, params["rms_final"], rrmsf)
        return losses, dx
