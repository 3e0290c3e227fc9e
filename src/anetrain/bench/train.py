"""``bench train``: the modeled ANE time of one dynamic-pipeline training step.

Every step evaluates each of the ten kernels of :mod:`anetrain.kernels.dynamic` once per layer
(weights ride in the input surfaces, so the surface bytes include them). The modeled total
sits beside the original project's measured whole-step times, which also include all CPU work.

This is the first section of ``bench train``; more sections (e.g. host timing of a simulated
step against PyTorch) return their own :class:`SuiteResult` and are merged by the command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anetrain.bench.result import PlotSpec, Series, SuiteResult, r
from anetrain.kernels.dynamic import Dims, build_kernels
from anetrain.model.config import ModelConfig
from anetrain.perfmodel import PerfParams, predict, program_cost
from anetrain.perfmodel.reference import training_reference

MB = 1e6
RULE = "-" * 88


@dataclass(frozen=True)
class KernelTime:
    name: str
    in_shape: tuple[int, int]  # (channels, width) of the fp16 input surface
    out_shape: tuple[int, int]
    io_bytes: int  # input + output surface bytes per eval
    flops: int
    ms: float
    bound: str


@dataclass(frozen=True)
class StepModel:
    model: str
    chip: str
    calibrated: bool
    config: ModelConfig
    kernels: tuple[KernelTime, ...]

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def evals(self) -> int:
        return len(self.kernels) * self.n_layers

    @property
    def layer_ms(self) -> float:
        return sum(k.ms for k in self.kernels)

    @property
    def step_ms(self) -> float:
        return self.layer_ms * self.n_layers

    @property
    def layer_io_bytes(self) -> int:
        return sum(k.io_bytes for k in self.kernels)

    @property
    def layer_flops(self) -> int:
        return sum(k.flops for k in self.kernels)


def model_step(config: ModelConfig, params: PerfParams, name: str, chip: str) -> StepModel:
    """Model every kernel of ``config``'s dynamic pipeline on ``params``."""
    kernels = []
    for spec in build_kernels(Dims.from_config(config)).values():
        cost = program_cost(spec.model.program)
        pred = predict(cost, params)
        kernels.append(
            KernelTime(
                name=spec.name,
                in_shape=spec.in_shape,
                out_shape=spec.out_shape,
                io_bytes=cost.input_bytes + cost.output_bytes,
                flops=cost.flops,
                ms=pred.ms,
                bound=pred.bound(),
            )
        )
    return StepModel(name, chip, params.calibrated, config, tuple(kernels))


def _measured(model: str) -> list[tuple[str, float, str]]:
    """(what, ms per step, note) measured by the original project for this model."""
    ref = training_reference()
    if model == "stories110m":
        ane, cpu, dyn = ref["ane_classifier"], ref["cpu_classifier"], ref["dynamic_pipeline_m4"]
        lo, hi = ane["step_breakdown_ms"]["ane"]
        return [
            ("static pipeline, ANE classifier (M4 Max)", ane["ms_per_step"],
             f"its ANE bucket: {lo:g}-{hi:g} ms, forward kernels only"),
            ("static pipeline, CPU classifier (M4 Max)", cpu["ms_per_step"], ""),
            ("dynamic pipeline, 10 kernels (M4)", dyn["ms_per_step"], ""),
        ]  # fmt: skip
    if model == "qwen3-0.6b":
        return [("dynamic pipeline (M4)", ref["qwen3_0_6b_dynamic_m4"]["ms_per_step"], "")]
    return []


def _kernel_line(name: str, k_in: str, k_out: str, io: float, gf: float, ms: float, b: str) -> str:
    tf = gf / ms if ms else 0.0
    return f"{name:<22} {k_in:>12} {k_out:>12} {io:9.2f} {gf:8.3f} {ms:9.3f} {tf:7.2f}  {b}"


def step_lines(step: StepModel) -> list[str]:
    c = step.config
    lines = [
        f"=== Modeled ANE time per training step: {step.model} on {step.chip} ===",
        f"dim={c.dim} hidden={c.hidden_dim} heads={c.n_heads}/{c.n_kv_heads or c.n_heads} "
        f"seq={c.seq_len} layers={c.n_layers} | {len(step.kernels)} dynamic kernels x "
        f"{c.n_layers} layers = {step.evals} evals per step",
        "",
        f"{'Kernel':<22} {'In (C x W)':>12} {'Out (C x S)':>12} {'I/O (MB)':>9} {'GFLOP':>8} "
        f"{'ms/eval':>9} {'TFLOPS':>7}  bound",
        RULE,
    ]
    for k in step.kernels:
        shape_in = f"{k.in_shape[0]} x {k.in_shape[1]}"
        shape_out = f"{k.out_shape[0]} x {k.out_shape[1]}"
        lines.append(
            _kernel_line(k.name, shape_in, shape_out, k.io_bytes / MB, k.flops / 1e9, k.ms, k.bound)
        )
    lines.append(RULE)
    io, gf = step.layer_io_bytes / MB, step.layer_flops / 1e9
    n = step.n_layers
    lines.append(_kernel_line(f"per layer ({len(step.kernels)} evals)", "", "", io, gf,
                              step.layer_ms, ""))  # fmt: skip
    lines.append(_kernel_line(f"per step ({step.evals} evals)", "", "", io * n, gf * n,
                              step.step_ms, ""))  # fmt: skip
    measured = _measured(step.model)
    if measured:
        lines += ["", "Measured by the original project (whole steps, CPU work included):"]
        for what, ms, note in measured:
            share = 100 * step.step_ms / ms
            tail = f"; {note}" if note else ""
            lines.append(f"  {what:<42} {ms:6.1f} ms/step  (modeled ANE = {share:4.1f}%{tail})")
    cal = "calibrated" if step.calibrated else "uncalibrated guess"
    lines += [
        "",
        f"times: modeled ANE time per eval on {step.chip} (perf model, {cal}); nothing is run. "
        "Not modeled: CPU RMSNorm, SiLU backward, classifier, loss, dW BLAS, surface staging.",
    ]
    return lines


def step_json(step: StepModel) -> dict[str, Any]:
    return {
        "model": step.model,
        "chip": step.chip,
        "calibrated": step.calibrated,
        "n_layers": step.n_layers,
        "evals_per_step": step.evals,
        "kernels": [
            {
                "name": k.name,
                "in_shape": list(k.in_shape),
                "out_shape": list(k.out_shape),
                "io_mb": r(k.io_bytes / MB),
                "gflop": r(k.flops / 1e9, 4),
                "modeled_ms_per_eval": r(k.ms, 4),
                "bound": k.bound,
            }
            for k in step.kernels
        ],
        "modeled_ms_per_layer": r(step.layer_ms),
        "modeled_ms_per_step": r(step.step_ms),
        "io_mb_per_step": r(step.layer_io_bytes * step.n_layers / MB, 1),
        "gflop_per_step": r(step.layer_flops * step.n_layers / 1e9, 2),
        "modeled_ane_tflops": r(step.layer_flops / step.layer_ms / 1e9, 2),
        "measured_reference": [
            {"what": what, "ms_per_step": ms, "note": note}
            for what, ms, note in _measured(step.model)
        ],
    }


def run_modeled(
    config: ModelConfig, name: str, params: PerfParams, chip: str, emit: Callable[[str], None]
) -> SuiteResult:
    """The modeled section: print the table, return its JSON and plot."""
    step = model_step(config, params, name, chip)
    for line in step_lines(step):
        emit(line)
    names = [k.name for k in step.kernels]
    plot = PlotSpec(
        f"Modeled ANE ms per step by kernel: {name} on {chip}",
        "kernel",
        f"ms per step (x{step.n_layers} layers)",
        [Series("modeled", list(range(len(names))), [k.ms * step.n_layers for k in step.kernels])],
        bars=True,
    )
    summary = {"training_ms_per_step_modeled_ane": r(step.step_ms)}
    return SuiteResult("training_dynamic_modeled", step_json(step), summary, plot, names)
