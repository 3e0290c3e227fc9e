"""Which kernel pipeline a run trains through, built from its settings (one place).

``dynamic``: ten kernels compiled once, weights staged into input surfaces. ``static``: per-layer
kernels with the weights baked in, recompiled after every optimizer step (``extras`` moves the
final RMSNorm, classifier, softmax and RMSNorm backward onto kernels too).
"""

from __future__ import annotations

import numpy as np

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.mil.types import DType
from anetrain.model.config import ModelConfig
from anetrain.train.pipeline import DynamicPipeline, KernelPipeline
from anetrain.train.static import StaticPipeline

PIPELINES = ("dynamic", "static")
DEFAULT_ACCUM = {"dynamic": 4, "static": 10}  # static: the original's 10 windows per compile


class PipelineChoiceError(AnetrainError, ValueError):
    """Pipeline settings that do not go together (named in the message)."""


def make_backend(name: str, chip: str | None, compile_budget: int | None = None) -> runtime.Backend:
    """The run's backend; ``compile_budget`` (simulator only) replaces the chip's per-process
    budget, so tests can force the static pipeline's restarts."""
    if compile_budget is None:
        return runtime.get_backend(name, chip)
    if name != "sim":
        raise PipelineChoiceError(
            "--compile-budget is for the sim backend only: on the ANE the budget is the "
            "compiler's own (it leaks per compile); drop the flag or use --backend sim"
        )
    if compile_budget < 1:
        raise PipelineChoiceError(f"--compile-budget must be at least 1, got {compile_budget}")
    return runtime.get_backend(name, chip, compile_budget=compile_budget)


def make_pipeline(
    pipeline: str,
    config: ModelConfig,
    backend: runtime.Backend,
    dtype: DType,
    used_ids: np.ndarray | None,
    *,
    ane_extras: bool = False,
    adapters: tuple[tuple[str, ...], int] = ((), 0),
) -> KernelPipeline:
    """The pipeline named ``pipeline`` (see :data:`PIPELINES`), compiled on ``backend``;
    ``adapters``: the LoRA terms its kernels add (dynamic only: LoRA with dropout)."""
    if pipeline not in PIPELINES:
        raise PipelineChoiceError(f"unknown pipeline {pipeline!r}; choose one of {PIPELINES}")
    if pipeline == "dynamic":
        if ane_extras:
            raise PipelineChoiceError("--ane-extras needs --pipeline static")
        return DynamicPipeline(
            config, backend=backend, dtype=dtype, used_ids=used_ids, adapters=adapters
        )
    return StaticPipeline(
        config, backend=backend, dtype=dtype, used_ids=used_ids, extras=ane_extras
    )
