"""What the training loop optimizes: every weight (:class:`FullTrainable`) or LoRA adapters on a
frozen base (:class:`LoraTrainable`).

Both expose one flat fp32 ``values`` buffer with a same-shaped ``grads`` (so zeroing, clipping
and AdamW stay single vector ops), the gradient sink the pipeline's backward writes into, the
staging of the kernels' weight regions after an update, and the full fp32 model for validation,
samples and export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anetrain.mil.types import FP16
from anetrain.model.lora import (
    Adapters,
    EffectiveWeights,
    LoraConfig,
    base_fingerprint,
    init_adapters,
    lora_weight_grads,
    write_peft,
)
from anetrain.model.params import Params
from anetrain.train.pipeline import DynamicPipeline, GradSink, KernelPipeline, NormGrads


class FullTrainable:
    """Full fine-tuning (or training from scratch): the model's own parameters."""

    lora: LoraConfig | None = None

    def __init__(self, params: Params) -> None:
        self.params = params  # what the pipeline's CPU parts read
        self.values = params
        self.grads = params.zeros_like()
        self.sink = GradSink(self.grads)

    def stage(self, pipeline: KernelPipeline) -> None:
        pipeline.stage_weights(self.params)

    def model_params(self) -> Params:
        return self.params


class LoraGrads(GradSink):
    """Adapter gradients from the kernels' activations and output gradients; frozen weights
    (norms, embeddings, untargeted projections) get none."""

    def __init__(self, adapters: Adapters, grads: Adapters) -> None:
        self.adapters, self.adapter_grads = adapters, grads

    @property
    def flat(self) -> np.ndarray:
        return self.adapter_grads.flat

    def matmul(self, layer: int, name: str, dout: np.ndarray, x: np.ndarray, g: float) -> None:
        if name in self.adapters.lora.params:
            lora_weight_grads(self.adapters, self.adapter_grads, name, layer, dout, x, g)

    def norms(self, layer: int) -> NormGrads:
        return NormGrads()

    def tensor(self, name: str) -> np.ndarray | None:
        return None


class LoraTrainable:
    """LoRA: the base held once in fp16, adapters (and their gradients) in fp32."""

    def __init__(
        self, base: Params, lora: LoraConfig, seed: int = 42, base_path: str | None = None
    ) -> None:
        self.params = base.astype(np.float16)  # frozen; the pipeline's CPU parts read it
        self.lora = lora
        self.base_path = base_path  # where the base was loaded from (recorded, not copied)
        self.base_id = base_fingerprint(self.params)
        self.values = init_adapters(base.config, lora, seed)
        self.grads = self.values.zeros_like()
        self.sink = LoraGrads(self.values, self.grads)
        self._base_staged: DynamicPipeline | None = None
        self._effective: dict[str, np.ndarray] | None = None

    def stage(self, pipeline: DynamicPipeline) -> None:
        """Prestaged surfaces: the frozen base once per pipeline, then only the adapted
        projections. Per-call staging (large models) reads the weights at every kernel call, so
        the adapted projections are materialised once per update, in the kernels' dtype."""
        if not pipeline.prestage:
            pipeline.stage_weights(self._materialised(pipeline))
            return
        if self._base_staged is not pipeline:
            pipeline.stage_weights(self.params)
            self._base_staged = pipeline
        pipeline.stage_weights(EffectiveWeights(self.params, self.values), only=self.lora.params)

    def _materialised(self, pipeline: DynamicPipeline) -> dict[str, np.ndarray]:
        """The base's tensors with the adapted projections' ``W + s B A`` written in."""
        dtype = np.float16 if pipeline.dims.dtype == FP16 else np.float32
        if self._effective is None or self._effective[self.lora.params[0]].dtype != dtype:
            self._effective = {n: np.empty(self.params[n].shape, dtype) for n in self.lora.params}
        eff = EffectiveWeights(self.params, self.values)
        for name, out in self._effective.items():
            for layer in range(out.shape[0]):
                out[layer] = eff[name][layer]
        return {n: self._effective.get(n, t) for n, t in self.params.items()}

    def model_params(self) -> Params:
        return self.values.merged(self.params)

    def record(self) -> dict[str, object]:
        """What a checkpoint keeps instead of the base: the settings and which base."""
        return {"config": self.lora.to_dict(), "base": {"id": self.base_id, "path": self.base_path}}

    def write_peft(self, folder: Path) -> Path:
        return write_peft(folder, self.values, self.base_path)
