"""The run folder contract: the names that ``anetrain train`` writes and ``generate``, ``resume``
and the dashboard read (the layout is described in docs/formats.md, "The run folder").

    <run>/config.json          model, training and data settings (rewritten at every start)
    <run>/metrics.jsonl        one JSON record per step ("type": "step") or validation ("val")
    <run>/summary.json         the Efficiency Report, written when the run ends
    <run>/ckpt_last.safetensors  the latest checkpoint (what --resume continues from)
    <run>/ckpt_best.safetensors  the checkpoint with the best validation loss so far

Step records carry one ``<phase>_ms`` field per phase of :data:`PHASES`.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CKPT_LAST = "ckpt_last.safetensors"
CKPT_BEST = "ckpt_best.safetensors"
RUN_FILES = (CONFIG, METRICS, SUMMARY)

# Where a training step's wall time goes, in the order the dashboard shows it: kernel evals,
# surface writes/reads/copies, classifier + loss, residual and SwiGLU math, RMSNorms, and the
# wait for the weight-gradient worker; then the wait for the gradient all-reduce across
# data-parallel ranks (0 on one process; the loop fills it in).
PHASES = ("kernels", "io", "classifier", "elementwise", "rmsnorm", "blas_wait", "comm")


def phase_key(phase: str) -> str:
    """The step record's field for ``phase``: ``"kernels"`` -> ``"kernels_ms"``."""
    return f"{phase}_ms"


def checkpoint_in(run_dir: Path) -> Path | None:
    """The checkpoint to load from a run folder: the best one if present, else the last."""
    for name in (CKPT_BEST, CKPT_LAST):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
