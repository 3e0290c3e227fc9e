"""What the training loop optimizes: every weight (:class:`FullTrainable`) or LoRA adapters on a
frozen base (:class:`LoraTrainable`).

Both expose one flat fp32 ``values`` buffer with a same-shaped ``grads`` (so zeroing, clipping
and AdamW stay single vector ops), the gradient sink the pipeline's backward writes into, the
staging of the kernels' weight regions after an update, and the full fp32 model for validation,
samples and export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anetrain.kernels.dynamic import INNER_PROJECTIONS
from anetrain.model.lora import (
    Adapters,
    LoraConfig,
    base_fingerprint,
    init_adapters,
    lora_weight_grads,
    write_peft,
)
from anetrain.model.params import Params
from anetrain.runfolder import PHASES
from anetrain.train.calls import PhaseTimer
from anetrain.train.pipeline import (
    NO_ADAPTER_PATH,
    AdapterPath,
    DynamicPipeline,
    GradSink,
    KernelPipeline,
    NormGrads,
)


class FullTrainable:
    """Full fine-tuning (or training from scratch): the model's own parameters."""

    lora: LoraConfig | None = None
    adapter_path: LoraAdapterPath | None = None
    kernel_adapters: tuple[tuple[str, ...], int] = ((), 0)  # the kernels' own adapter terms

    def __init__(self, params: Params) -> None:
        self.params = params  # what the pipeline's CPU parts read
        self.values = params
        self.grads = params.zeros_like()
        self.sink = GradSink(self.grads)

    def stage(self, pipeline: KernelPipeline) -> None:
        pipeline.stage_weights(self.params)

    def model_params(self) -> Params:
        return self.params


class LoraAdapterPath(AdapterPath):
    """LoRA's forward and backward as peft trains: ``y = W x + s B A dropout(x)`` for each
    targeted projection, with its own dropout mask per projection, layer and window (q, k and v
    read the same ``xn`` through three masks, so a merged ``W + s B A`` would be exact only
    without dropout). At ``lora_dropout`` 0 there are no masks and the input is used as is.

    The kernels hold the base ``W``. The adapter terms of the projections whose output stays
    inside a kernel (:data:`~anetrain.kernels.dynamic.INNER_PROJECTIONS`: q, k, v, gate, up) run
    there, from ``u = s A dropout(x)`` written as an input and ``B`` staged as a weight; o's and
    down's terms, and every adapter's input gradient ``dropout^T(s A^T B^T dy)``, are rank-r
    GEMMs on the CPU, here. Inverted dropout: kept values are scaled by ``1/(1-p)``.

    Masks: the window with index ``n`` in the run's window stream (the data sampler's global
    index, set by the trainer each step) draws from ``numpy.random.default_rng([seed, n])``: at
    a layer's first use one ``random((IN, S), float32)`` per targeted projection in target order
    (q, k, v, o, gate, up, down), kept where ``>= p``. So every accumulation window draws fresh
    masks, a window draws the same ones on any number of data-parallel ranks, and a resumed
    run (the sampler's position and the seed are in the checkpoint) draws the straight run's."""

    def __init__(self, adapters: Adapters, seed: int) -> None:
        lora = adapters.lora
        self.adapters, self.p, self.scaling = adapters, lora.dropout, np.float32(lora.scaling)
        self.keep_scale = np.float32(1 / (1 - lora.dropout))
        self.targets = lora.params
        inner = {p for params in INNER_PROJECTIONS.values() for p in params}
        self.adapted = tuple(p for p in lora.params if p in inner)
        self.seed = int(seed)
        self.window = 0  # the stream index of the next window
        self.masks: dict[tuple[int, str], np.ndarray] = {}  # this window's, bool [IN, S]
        self._timer = PhaseTimer(PHASES)
        self._rng = np.random.default_rng([self.seed, self.window])

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])

    def begin_window(self, timer: PhaseTimer) -> None:
        self._timer = timer
        self._rng = np.random.default_rng([self.seed, self.window])
        self.window += 1
        self.masks = {}

    def mask_bytes(self, seq_len: int) -> int:
        """Memory of one window's masks, which the backward reads again, so all layers' are held
        at once (bool ``[IN, S]`` per targeted projection and layer), plus the largest fp32 draw
        (for :func:`anetrain.memory.training_bytes`)."""
        if not self.p:
            return 0  # no masks: the inputs are used as they are
        widths = [self.adapters[f"{n}.A"].shape[-1] for n in self.targets]
        layers = self.adapters.config.n_layers
        return layers * sum(widths) * seq_len + max(widths) * seq_len * 4

    def dropped(self, layer: int, name: str, x: np.ndarray) -> np.ndarray:
        if name not in self.targets or not self.p:
            return x
        if (layer, name) not in self.masks:  # the layer's masks, drawn in target order
            for n in self.targets:
                width = self.adapters[f"{n}.A"].shape[-1]
                self.masks[layer, n] = self._rng.random((width, x.shape[1]), np.float32) >= self.p
        return x * self.masks[layer, name] * self.keep_scale  # [IN,S]

    def _u(self, layer: int, name: str, x: np.ndarray) -> np.ndarray:
        """``s A dropout(x)``: [r, S]."""
        return self.scaling * (self.adapters[f"{name}.A"][layer] @ self.dropped(layer, name, x))

    def kernel_inputs(self, layer: int, x: np.ndarray, *names: str) -> dict[str, np.ndarray]:
        with self._timer("elementwise"):
            return {f"{n}_u": self._u(layer, n, x) for n in names if n in self.adapted}

    def add(
        self, layer: int, y: np.ndarray, *terms: tuple[str, np.ndarray], scale: float = 1.0
    ) -> np.ndarray:
        with self._timer("elementwise"):
            for name, x in terms:
                if name in self.targets:
                    b = self.adapters[f"{name}.B"][layer]  # [OUT,r]
                    y = y + np.float32(scale) * (b @ self._u(layer, name, x))  # [OUT,S]
            return y

    def on_cpu(self, name: str) -> bool:
        return name in self.targets

    def add_dx(self, layer: int, dx: np.ndarray, *terms: tuple[str, np.ndarray]) -> np.ndarray:
        with self._timer("elementwise"):
            for name, dy in terms:
                if name in self.targets:
                    a, b = self.adapters[f"{name}.A"][layer], self.adapters[f"{name}.B"][layer]
                    dx = dx + self.dropped(layer, name, a.T @ (self.scaling * (b.T @ dy)))
            return dx


class LoraGrads(GradSink):
    """Adapter gradients from the kernels' activations and output gradients; frozen weights
    (norms, embeddings, untargeted projections) get none. ``path``: the adapter terms beside the
    kernels (LoRA dropout), whose dropped inputs the pipeline hands over."""

    def __init__(
        self, adapters: Adapters, grads: Adapters, path: AdapterPath = NO_ADAPTER_PATH
    ) -> None:
        self.adapters, self.adapter_grads, self.path = adapters, grads, path

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
        self,
        base: Params,
        lora: LoraConfig,
        seed: int = 42,
        base_path: str | None = None,
        base_vocab_ids: list[int] | None = None,
    ) -> None:
        self.params = base.astype(np.float16)  # frozen; the pipeline's CPU parts read it
        self.lora = lora
        self.base_path = base_path  # where the base was loaded from (recorded, not copied)
        # The ids the frozen classifier was trained over (an anetrain base trained on a
        # compacted vocabulary; None: every id, as a Hugging Face base): what sampling keeps to.
        self.base_vocab_ids = base_vocab_ids
        self.base_id = base_fingerprint(self.params)
        self.values = init_adapters(base.config, lora, seed)
        self.grads = self.values.zeros_like()
        # the kernels keep the base and add the adapter terms (peft's unmerged forward), with
        # or without dropout: no merged copy of the adapted projections per update
        self.adapter_path = LoraAdapterPath(self.values, seed)
        self.sink = LoraGrads(self.values, self.grads, self.adapter_path)
        self._base_staged: DynamicPipeline | None = None

    @property
    def kernel_adapters(self) -> tuple[tuple[str, ...], int]:
        """The projections whose adapter term the kernels add, and its rank (with dropout;
        ``DynamicPipeline(adapters=...)``)."""
        adapted = self.sink.path.adapted
        return (adapted, self.lora.rank) if adapted else ((), 0)

    def stage(self, pipeline: DynamicPipeline) -> None:
        """The kernels keep the frozen base (staged once per pipeline; per-call staging reads
        it at every kernel call) and add the adapter terms themselves, so an update restages
        only the adapters' ``B`` of the projections whose term runs in a kernel."""
        weights = _BaseAndB(self.params, self.values)
        if self._base_staged is not pipeline:
            pipeline.stage_weights(weights)
            self._base_staged = pipeline
        elif self.adapter_path.adapted:
            pipeline.stage_weights(weights, only=[f"{n}.B" for n in self.adapter_path.adapted])

    def model_params(self) -> Params:
        return self.values.merged(self.params)

    def record(self) -> dict[str, object]:
        """What a checkpoint keeps instead of the base: the settings and which base (and with
        dropout, the masks' seed)."""
        rec: dict[str, object] = {"config": self.lora.to_dict()}
        rec["base"] = {"id": self.base_id, "path": self.base_path}
        if self.adapter_path.p:
            rec["dropout"] = self.adapter_path.state_dict()
        return rec

    def write_peft(self, folder: Path, adapters: Adapters | None = None) -> Path:
        """The PEFT folder of these adapters (or of ``adapters`` read back from a checkpoint)."""
        return write_peft(folder, self.values if adapters is None else adapters, self.base_path)


class _BaseAndB:
    """The kernels' weights with LoRA dropout: the frozen base, plus each adapter's ``B`` as
    ``"{param}.B"`` (the weight of the adapter terms the kernels add)."""

    def __init__(self, base: Params, adapters: Adapters) -> None:
        self.base, self.adapters = base, adapters

    def __getitem__(self, name: str) -> np.ndarray:
        return self.adapters[name] if name in self.adapters.tensors else self.base[name]
