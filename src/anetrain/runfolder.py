"""The run folder contract: the names that ``anetrain train`` writes and ``generate``, ``resume``
and the dashboard read (the layout is described in docs/formats.md, "The run folder").

    <run>/config.json          model, training and data settings (rewritten at every start)
    <run>/metrics.jsonl        one JSON record per step ("type": "step") or validation ("val")
    <run>/summary.json         the Efficiency Report, written when the run ends
    <run>/ckpt_last.safetensors  the latest checkpoint (what --resume continues from)
    <run>/ckpt_best.safetensors  the checkpoint with the best validation loss so far
    <run>/adapter/             LoRA runs: the adapters as a PEFT folder (adapter_config.json,
                               adapter_model.safetensors) of the checkpoint readers load

Step records carry one ``<phase>_ms`` field per phase of :data:`PHASES`, and the same times
under maderix/ANE's ``train_large`` names (:data:`ORIGINAL_FIELDS`) as ms per window (its "step"
is one sequence), plus ``compiles`` (this process's count). Runs whose pipeline recompiles
(static) also write one ``"type": "batch"`` record per optimizer step (its ``train_ms`` and the
``compile_ms`` of the recompile that followed it; a starting process writes one for its own
compiles) and a ``"type": "restart"`` record before re-executing itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CKPT_LAST = "ckpt_last.safetensors"
CKPT_BEST = "ckpt_best.safetensors"
ADAPTER_DIR = "adapter"
RUN_FILES = (CONFIG, METRICS, SUMMARY)

# Where a training step's wall time goes, in the order the dashboard shows it: kernel evals,
# surface writes/reads/copies, classifier + loss, residual and SwiGLU math, RMSNorms, and the
# wait for the weight-gradient worker; then the wait for the gradient all-reduce across
# data-parallel ranks (0 on one process; the loop fills it in).
PHASES = ("kernels", "io", "classifier", "elementwise", "rmsnorm", "blas_wait", "comm")


# maderix/ANE train_large's JSON telemetry fields -> our phases. Its buckets cover only the
# forward half of a step; ours cover the whole window.
ORIGINAL_FIELDS = {
    "t_ane": "kernels",
    "t_io": "io",
    "t_cls": "classifier",
    "t_elem": "elementwise",
    "t_rms": "rmsnorm",
    "t_cblas_wait": "blas_wait",
}


def original_fields(phases: dict[str, float], windows: int) -> dict[str, float]:
    """The original's per-sequence telemetry fields from one step's phase times (ms)."""
    return {k: round(phases.get(p, 0.0) / windows, 3) for k, p in ORIGINAL_FIELDS.items()}


def batch_record(
    step: int, compile_ms: float, train_ms: float = 0.0, windows: int = 1, compiles: int = 0
) -> dict[str, Any]:
    """The ``batch`` record after ``step``: its ``train_ms`` and the ``compile_ms`` of the
    recompile that followed it (a process that starts at ``step`` writes its own compile)."""
    return {
        "type": "batch",
        "step": step,
        "compile_ms": round(compile_ms, 1),
        "train_ms": round(train_ms, 1),
        "ms_per_window": round(train_ms / windows, 1),
        "compiles": compiles,
    }


def phase_key(phase: str) -> str:
    """The step record's field for ``phase``: ``"kernels"`` -> ``"kernels_ms"``."""
    return f"{phase}_ms"


def checkpoint_in(run_dir: Path) -> Path | None:
    """The checkpoint to load from a run folder: the best one if present, else the last."""
    for name in (CKPT_BEST, CKPT_LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
