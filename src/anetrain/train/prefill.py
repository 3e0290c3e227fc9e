"""Prompt prefill through the dynamic ANE kernel pipeline, filling the NumPy KV cache.

Generation decodes one token at a time on the CPU (:func:`~anetrain.model.reference.forward_step`
over a :class:`~anetrain.model.reference.KVCache`), but the prompt is a whole window: it runs
through the same compiled forward kernels that training uses (``sdpa_fwd``, ``wo_fwd``,
``ffn_fused`` of :class:`~anetrain.train.pipeline.DynamicPipeline`), on the ``sim`` backend or
the ``ane`` backend on a Mac. The prompt is padded to the pipeline's window: attention is
causal, so the padding after the prompt cannot change any prompt position. Each layer's
``k_rope`` and ``v`` taps for the prompt positions land in the KV cache; the CPU computes the
final RMSNorm and the full-vocabulary classifier (``Params.classifier``) for the last prompt
position only.

With fp32 kernels (``dtype=FP32``, sim only) the cache and logits match
:func:`~anetrain.model.reference.prefill` to float32 rounding; with fp16 kernels (what the ANE
runs) the K/V taps are fp16 values, so expect relative errors around 1e-3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.mil.types import FP16, DType
from anetrain.model.config import ModelConfig
from anetrain.model.params import Params
from anetrain.model.reference import KVCache, rmsnorm_forward
from anetrain.train.pipeline import DynamicPipeline


class PrefillError(AnetrainError, ValueError):
    """A prompt or cache that the kernel prefill cannot take (too long, wrong model)."""


def kernel_prefill(
    pipeline: DynamicPipeline,
    params: Params,
    prompt_ids: Sequence[int] | np.ndarray,
    kv_cache: KVCache,
    *,
    stage: bool = True,
) -> np.ndarray:
    """Run ``prompt_ids`` [T] through the pipeline's forward kernels, fill ``kv_cache``
    positions ``[0, T)`` of every layer, and return the logits ``[V]`` of the last prompt
    position (as :func:`~anetrain.model.reference.prefill` does).

    ``stage=False`` skips writing the weights into the kernels' surfaces (when ``params``
    were already staged with ``pipeline.stage_weights``).
    Raises :class:`PrefillError` for an empty prompt, a prompt longer than the pipeline's
    window or the cache, or params of another architecture.
    """
    cfg = pipeline.config
    S, L = pipeline.dims.seq, cfg.n_layers
    if params.config.arch_hash() != cfg.arch_hash():
        raise PrefillError(f"params do not match the pipeline's model: {cfg.diff(params.config)}")
    tokens = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
    T = tokens.size
    if T == 0:
        raise PrefillError("the prompt must hold at least one token (e.g. BOS)")
    if T > S:
        raise PrefillError(
            f"prompt of {T} tokens is longer than the kernel pipeline's window of {S} "
            f"(its seq_len); shorten the prompt to at most {S} tokens or build the pipeline "
            "with a larger seq_len"
        )
    if kv_cache.capacity < T:
        raise PrefillError(f"prompt of {T} tokens exceeds the KV cache ({kv_cache.capacity})")
    want = (L, cfg.n_kv_heads, cfg.head_dim)
    have = (kv_cache.k.shape[0], kv_cache.k.shape[1], kv_cache.k.shape[3])
    if have != want or kv_cache.v.shape != kv_cache.k.shape:
        raise PrefillError(f"KV cache of shape {kv_cache.k.shape} does not fit the model {want}")
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        raise PrefillError(f"prompt ids must be in [0, {cfg.vocab_size})")
    if stage:
        pipeline.stage_weights(params)

    # causal attention: whatever follows the prompt cannot reach positions < T
    window = np.zeros(pipeline.dims.seq, dtype=np.int64)
    window[:T] = tokens
    x, acts = pipeline.forward(params, window)
    KVH, HD = cfg.n_kv_heads, cfg.head_dim
    spec = pipeline.specs["sdpa_fwd"]
    k_rows, v_rows = spec.span_part("qkv", "k_rope"), spec.span_part("qkv", "v")
    for layer, a in enumerate(acts):
        # taps [Q_rope; K_rope; V] channel-first, channel = head * HD + d -> cache [KVH, T, HD]
        k, v = a.qkv[k_rows, :T], a.qkv[v_rows, :T]
        kv_cache.k[layer, :, :T] = k.reshape(KVH, HD, T).transpose(0, 2, 1)
        kv_cache.v[layer, :, :T] = v.reshape(KVH, HD, T).transpose(0, 2, 1)
    kv_cache.length = T

    # final norm and the classifier, for the last prompt position only
    with pipeline.timer("rmsnorm"):
        xf, _ = rmsnorm_forward(x[:, T - 1], params["rms_final"], cfg.norm_eps)  # [D]
    with pipeline.timer("classifier"):
        return params.classifier @ xf.astype(params.dtype)  # [V]


class KernelPrefill:
    """A forward-kernel pipeline compiled once, callable like
    :func:`~anetrain.model.reference.prefill`: ``(params, tokens, kv_cache) -> logits [V]``.

    Weights are staged on every call (cheap next to the forward). Use as a context manager, or
    call :meth:`close`, to unload the kernels.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        backend: str | runtime.Backend = "sim",
        chip: str | None = None,
        dtype: DType = FP16,
    ) -> None:
        # forward kernels only (3 compiles of the budget, not 10); overlap_blas=False: no
        # worker threads, and no single-threaded BLAS limit left for the NumPy decode after
        self.pipeline = DynamicPipeline(
            config,
            backend=backend,
            chip=chip,
            dtype=dtype,
            overlap_blas=False,
            forward_only=True,
        )

    @property
    def seq_len(self) -> int:
        return self.pipeline.dims.seq

    @property
    def compile_s(self) -> float:
        return self.pipeline.compile_s

    def __call__(self, params: Params, tokens: np.ndarray, kv_cache: KVCache) -> np.ndarray:
        return kernel_prefill(self.pipeline, params, tokens, kv_cache)

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> KernelPrefill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
