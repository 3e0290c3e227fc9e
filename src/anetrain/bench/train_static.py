"""``bench train --pipeline static [--ane-extras]``: the modeled static pipeline, like for like.

Every kernel of :mod:`anetrain.kernels.static` is modeled (ANE time per eval from the perf
model, compile time from :mod:`anetrain.perfmodel.compile`). The original's "ANE ms" bucket
counts only the forward kernel evaluations of one 256-token sequence; the same quantity is
reported beside it, then every kernel of the sequence, then a compiled batch (``accum``
sequences, recompiled once) and the compile share. The classifier is modeled over the full
vocabulary, as the original runs it (training here compacts it to the used ids).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from anetrain.bench.result import PlotSpec, Series, SuiteResult, r
from anetrain.bench.train import MB, RULE, _kernel_line
from anetrain.kernels.dynamic import Dims
from anetrain.kernels.static import PER_LAYER, build_static_kernels, compile_plan
from anetrain.model.config import ModelConfig
from anetrain.perfmodel import PerfParams, predict, program_cost
from anetrain.perfmodel.compile import compile_model
from anetrain.perfmodel.reference import training_reference

FORWARD = ("fwd_attn", "fwd_ffn", "final_rms", "classifier", "softmax")  # the original's bucket
NOT_MODELED = (
    "CPU residual adds, RMSNorm (dw; dx too without extras), cross-entropy, classifier "
    "backward, dW BLAS, embedding, surface copies, process restarts"
)


def model_static(
    config: ModelConfig,
    params: PerfParams,
    *,
    extras: bool,
    budget: int,
    accum: int = 10,
) -> dict[str, Any]:
    """Every figure of the static section as one dict (the JSON of the suite)."""
    specs = build_static_kernels(
        Dims.from_config(config), extras=extras, vocab_rows=np.arange(config.vocab_size)
    )
    per_batch, once = compile_plan(specs, config.n_layers)
    cm = compile_model()
    kernels = []
    for name, spec in specs.items():
        cost = program_cost(spec.model.program)
        pred = predict(cost, params)
        evals = config.n_layers if name in PER_LAYER else 1
        kernels.append(
            {
                "name": name,
                "in_shape": list(spec.in_shape),
                "out_shape": list(spec.out_shape),
                "io_mb": r((cost.input_bytes + cost.output_bytes) / MB),
                "gflop": r(cost.flops / 1e9, 4),
                "modeled_ms_per_eval": r(pred.ms, 4),
                "evals_per_sequence": evals,
                "modeled_ms_per_sequence": r(pred.ms * evals, 3),
                "bound": pred.bound(),
                "compile_ms": r(cm.kernel_ms(spec), 1),
                "compiled": "per batch" if spec.baked else "once per process",
                "forward": name in FORWARD,
            }
        )
    seq_all = sum(k["modeled_ms_per_sequence"] for k in kernels)
    seq_fwd = sum(k["modeled_ms_per_sequence"] for k in kernels if k["forward"])
    compile_batch = sum(cm.kernel_ms(specs[n]) for n in per_batch)
    compile_once = sum(cm.kernel_ms(specs[n]) for n in once)
    first = len(per_batch) + len(once)
    batches_per_process = max(1, 1 + (budget - first) // len(per_batch)) if first <= budget else 0
    # the original's regime: each process compiles everything, then trains its batches
    compile_per_batch = (compile_once + batches_per_process * compile_batch) / max(
        batches_per_process, 1
    )
    ane_batch = accum * seq_all
    return {
        "pipeline": "static + ANE extras" if extras else "static",
        "kernels": kernels,
        "kernel_count": first,
        "recompiled_per_batch": len(per_batch),
        "compiled_once_per_process": len(once),
        "compile_budget": budget,
        "batches_per_process": batches_per_process,
        "accum": accum,
        "modeled_forward_ane_ms_per_sequence": r(seq_fwd, 2),
        "modeled_ane_ms_per_sequence": r(seq_all, 2),
        "modeled_ane_ms_per_batch": r(ane_batch, 1),
        "modeled_compile_ms_per_batch": r(compile_per_batch, 0),
        "modeled_compile_pct_upper_bound": r(
            100 * compile_per_batch / (compile_per_batch + ane_batch), 1
        ),
        "compile_model": {"fixed_ms": r(cm.fixed_ms, 2), "ms_per_mb": r(cm.ms_per_mb, 3)},
        "not_modeled": NOT_MODELED,
    }


def _measured(model: str, extras: bool) -> dict[str, Any] | None:
    if model != "stories110m":
        return None
    ref = training_reference()
    return ref["ane_classifier" if extras else "cpu_classifier"]


def static_lines(m: dict[str, Any], model: str, chip: str, config: ModelConfig) -> list[str]:
    c = config
    lines = [
        f"=== Modeled ANE time per training step: {model} on {chip}, {m['pipeline']} pipeline ===",
        f"dim={c.dim} hidden={c.hidden_dim} heads={c.n_heads}/{c.n_kv_heads} seq={c.seq_len} "
        f"layers={c.n_layers} vocab={c.vocab_size} | Kernels: {m['kernel_count']} "
        f"({m['recompiled_per_batch']} recompiled per batch + "
        f"{m['compiled_once_per_process']} weight-free, once per process)",
        "",
        f"{'Kernel':<22} {'In (C x S)':>12} {'Out (C x S)':>12} {'I/O (MB)':>9} {'GFLOP':>8} "
        f"{'ms/eval':>9} {'TFLOPS':>7}  bound, evals/seq, compile ms",
        RULE,
    ]
    for k in m["kernels"]:
        shape_in = f"{k['in_shape'][0]} x {k['in_shape'][1]}"
        shape_out = f"{k['out_shape'][0]} x {k['out_shape'][1]}"
        tail = f"{k['bound']}, x{k['evals_per_sequence']}, {k['compile_ms']:.0f} ({k['compiled']})"
        lines.append(
            _kernel_line(k["name"], shape_in, shape_out, k["io_mb"], k["gflop"],
                         k["modeled_ms_per_eval"], tail)
        )  # fmt: skip
    lines += [
        RULE,
        f"forward kernels per sequence (the original's 'ANE ms'): "
        f"{m['modeled_forward_ane_ms_per_sequence']:8.2f} ms",
        f"all kernels per sequence:                              "
        f"{m['modeled_ane_ms_per_sequence']:8.2f} ms",
        f"batch of {m['accum']} sequences (one recompile):              "
        f"{m['modeled_ane_ms_per_batch']:8.1f} ms ANE",
        f"compile per batch ({m['batches_per_process']} batch(es) per process at budget "
        f"{m['compile_budget']}): {m['modeled_compile_ms_per_batch']:.0f} ms -> compile "
        f"{m['modeled_compile_pct_upper_bound']:.1f}% of compile + ANE time (an upper bound: "
        "CPU time is not modeled)",
    ]
    meas = _measured(model, m["pipeline"] != "static")
    if meas is not None:
        lo, hi = meas.get("step_breakdown_ms", {}).get("ane", [None, None])
        bucket = f", its ANE bucket {lo:g}-{hi:g} ms (forward kernels)" if lo is not None else ""
        measured_batch = m["accum"] * meas["ms_per_step"]
        share = (
            100
            * m["modeled_compile_ms_per_batch"]
            / (m["modeled_compile_ms_per_batch"] + measured_batch)
        )
        lines += [
            "",
            "Measured by the original project (M4 Max, whole steps, CPU work included):",
            f"  {meas['kernels']} kernels, {meas['ms_per_step']} ms/step{bucket}; compile "
            f"{meas['compile_pct_of_wall']}% of wall",
            f"  modeled compile per batch with its measured {meas['ms_per_step']} ms/step: "
            f"compile {share:.1f}% of compile + train",
        ]
    lines += [
        "",
        f"times: modeled (perf model per eval; compile {m['compile_model']['fixed_ms']:.1f} ms "
        f"+ {m['compile_model']['ms_per_mb']:.2f} ms/MB per kernel). Not modeled: "
        f"{NOT_MODELED}.",
    ]
    return lines


def run_static(
    config: ModelConfig,
    name: str,
    params: PerfParams,
    chip: str,
    emit: Callable[[str], None],
    *,
    extras: bool,
    budget: int,
) -> SuiteResult:
    """The static section: print the table, return its JSON and plot."""
    m = model_static(config, params, extras=extras, budget=budget)
    meas = _measured(name, extras)
    if meas is not None:
        m["measured_reference"] = meas
    for line in static_lines(m, name, chip, config):
        emit(line)
    names = [k["name"] for k in m["kernels"]]
    plot = PlotSpec(
        f"Modeled ANE ms per sequence by kernel: {name} on {chip}, {m['pipeline']}",
        "kernel",
        "ms per sequence",
        [Series("modeled", list(range(len(names))), [k["modeled_ms_per_sequence"]
                                                     for k in m["kernels"]])],
        bars=True,
    )  # fmt: skip
    summary = {
        "kernels": m["kernel_count"],
        "training_ms_per_sequence_modeled_forward_ane": m["modeled_forward_ane_ms_per_sequence"],
        "training_ms_per_sequence_modeled_ane": m["modeled_ane_ms_per_sequence"],
        "compile_ms_per_batch_modeled": m["modeled_compile_ms_per_batch"],
    }
    suite = "training_static_extras_modeled" if extras else "training_static_modeled"
    return SuiteResult(suite, m, summary, plot, names)
