"""scaled_dot_product_attention, with the ANE's known quirk: ``attn_mask`` is ignored.

The whole op runs in float32 (scores, max-shifted softmax, weighted sum) and only its output is
rounded; how the hardware rounds internally is not known. Profiles with
``sdpa_ignores_mask = false`` add the mask to the scores instead: a float mask as is, a bool
mask as 0 where True and -inf where False.
"""

from __future__ import annotations

import math

import numpy as np

from anetrain.mil.ir import Operation
from anetrain.runtime.sim.context import PlanContext


def _bool_mask_bias(mask: np.ndarray, ctx: PlanContext, *, const: bool) -> np.ndarray:
    """A bool mask says which keys take part: True adds 0, False adds -inf (coremltools,
    PyTorch). A run-time mask's additive buffer is refreshed by a step before the op's own."""
    bias = np.zeros(mask.shape, np.float32)

    def refresh() -> None:
        bias.fill(-np.inf)
        np.copyto(bias, 0.0, where=mask)

    refresh()
    if not const:
        ctx.steps.append(refresh)
    return bias


def plan_sdpa(op: Operation, ctx: PlanContext) -> None:
    q = ctx.value(op.inputs["query"])
    k = ctx.value(op.inputs["key"])
    v = ctx.value(op.inputs["value"])
    mask_arg = op.inputs.get("attn_mask")
    mask = None
    if mask_arg is not None and not ctx.chip.sdpa_ignores_mask:
        mask = ctx.value(mask_arg)
        if mask.dtype == np.bool_:
            mask = _bool_mask_bias(mask, ctx, const=ctx.is_const(mask_arg))
    scale = np.float32(1.0 / math.sqrt(q.shape[-1]))
    kt = np.swapaxes(k, -1, -2)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scores = ctx.scratch("sdpa_scores", (*batch, q.shape[-2], k.shape[-2]))
    acc = ctx.scratch("sdpa_acc", (*batch, q.shape[-2], 1))

    def sdpa(r: np.ndarray) -> None:
        np.matmul(q, kt, out=scores)
        np.multiply(scores, scale, out=scores)
        if mask is not None:
            np.add(scores, mask, out=scores)
        np.max(scores, axis=-1, keepdims=True, out=acc)
        np.subtract(scores, acc, out=scores)
        np.exp(scores, out=scores)
        np.sum(scores, axis=-1, keepdims=True, out=acc)
        np.divide(scores, acc, out=scores)
        np.matmul(scores, v, out=r)

    ctx.emit(op, sdpa)


PLANNERS = {"scaled_dot_product_attention": plan_sdpa}
