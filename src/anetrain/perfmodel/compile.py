"""Modeled compile + load time of a kernel with baked weights: ``fixed + per_mb * weight MB``.

The two coefficients solve the two reported batch compiles of maderix/ANE's static trainers
(``compile_reference.json``: 60 and 86 Stories110M kernels on an M3 Ultra), with each kernel's
weight bytes taken from :mod:`anetrain.kernels.static` (the same conv shapes). The result,
about 13 ms per kernel + 9 ms per MB, is checked against figures it was not fitted to: the
M4 Max 20-step runs (2 processes x 72 or 99 compiles) and the M5 probe's 256-channel conv
(compile 11 ms + load 1.7 ms); :func:`checks` lists the three. Compile time is taken as
chip-independent (the compiler runs on the CPU; the M3 Ultra fit predicts the M4 Max runs
within 6 %).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from anetrain.kernels.dynamic import Dims, KernelSpec
from anetrain.kernels.static import build_static_kernels, compile_plan
from anetrain.model.config import preset

REFERENCE_FILE = "compile_reference.json"
MB = 1e6


def weight_bytes(spec: KernelSpec) -> int:
    """Constant bytes a kernel's compile takes in: baked parameters (fp16) and constant files."""
    baked = sum(2 * int(np.prod(w.shape)) for w in spec.baked.values())
    return baked + sum(len(b) for b in spec.model.weights.values())


@dataclass(frozen=True)
class CompileModel:
    fixed_ms: float  # per kernel (compile + load), whatever its size
    ms_per_mb: float  # per MB of constants

    def kernel_ms(self, spec_or_bytes: KernelSpec | int) -> float:
        n = spec_or_bytes if isinstance(spec_or_bytes, int) else weight_bytes(spec_or_bytes)
        return self.fixed_ms + self.ms_per_mb * n / MB


def _reference() -> dict[str, Any]:
    text = resources.files("anetrain.perfmodel").joinpath(REFERENCE_FILE).read_text("utf-8")
    return json.loads(text)


@cache
def _stories_kernels(extras: bool) -> tuple[list[KernelSpec], list[KernelSpec]]:
    """Stories110M's static kernels with the original's full vocabulary: (compiled per batch,
    compiled once per process), each listed once per compile."""
    cfg = preset("stories110m")
    specs = build_static_kernels(
        Dims.from_config(cfg), extras=extras, vocab_rows=np.arange(cfg.vocab_size)
    )
    per_batch, once = compile_plan(specs, cfg.n_layers)
    return [specs[n] for n in per_batch], [specs[n] for n in once]


@cache
def compile_model() -> CompileModel:
    """The model fitted to the reference batches (see the module docstring)."""
    rows, ms = [], []
    for fit in _reference()["fit"]:
        per_batch, _ = _stories_kernels(fit["extras"])
        if len(per_batch) != fit["kernels"]:
            raise ValueError(f"{REFERENCE_FILE}: {fit['label']} counts {fit['kernels']} kernels")
        rows.append([len(per_batch), sum(weight_bytes(s) for s in per_batch) / MB])
        ms.append(fit["ms"])
    fixed, per_mb = np.linalg.solve(np.array(rows, float), np.array(ms, float))
    return CompileModel(float(fixed), float(per_mb))


def checks() -> list[tuple[str, float, float]]:
    """(what, modeled ms, reported ms) for the reference figures the model was not fitted to."""
    model, out = compile_model(), []
    for check in _reference()["check"]:
        if "weight_bytes" in check:
            modeled = model.kernel_ms(int(check["weight_bytes"]))
        else:
            per_batch, once = _stories_kernels(check["extras"])
            process = sum(model.kernel_ms(s) for s in per_batch + once)
            modeled = check["processes"] * process
        out.append((check["label"], modeled, float(check["ms"])))
    return out
