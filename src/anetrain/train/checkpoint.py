"""Training checkpoints live in :mod:`anetrain.model.checkpoint` (a model file format, read by
the one model loader); this name stays for the training loop and existing imports."""

from anetrain.model.checkpoint import (
    MAGIC,
    META_KEY,
    REQUIRED,
    VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    refuse_non_finite,
    save_checkpoint,
)

__all__ = [
    "MAGIC",
    "META_KEY",
    "REQUIRED",
    "VERSION",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "read_metadata",
    "refuse_non_finite",
    "save_checkpoint",
]
