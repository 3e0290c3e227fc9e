"""Training checkpoints: one safetensors file holding weights, Adam moments and run state.

Tensors are stored by name (``param/wq``, ``adam_m/wq``, ``adam_v/wq``, ...) so any
safetensors reader can open them; everything else (magic, version, full model config,
architecture hash, step, loss-scaler, RNG and data-sampler states, best loss) is JSON in the
safetensors metadata under the key ``anetrain``, with a CRC-32 over all tensor bytes and that
metadata. Writes are atomic (temp file, fsync, rename), so a crash never leaves a half-written
checkpoint in place, and non-finite weights are refused rather than written.
See docs/formats.md.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anetrain.errors import AnetrainError
from anetrain.fsutil import atomic_write
from anetrain.model.config import ModelConfig, from_dict
from anetrain.model.lora import Adapters, LoraConfig
from anetrain.model.params import Params

MAGIC = "anetrain-checkpoint"
VERSION = 1
META_KEY = "anetrain"


class CheckpointError(AnetrainError):
    """A checkpoint is missing, corrupt, truncated or belongs to another architecture."""


@dataclass
class Checkpoint:
    config: ModelConfig
    params: Params | Adapters  # adapters only, for a LoRA run (extra["lora"] names the base)
    step: int = 0
    adam_m: Params | Adapters | None = None
    adam_v: Params | Adapters | None = None
    adam_t: int = 0
    scaler: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    best_loss: float = float("inf")
    extra: dict[str, Any] = field(default_factory=dict)


def _tensors(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for prefix, params in (
        ("param", ckpt.params),
        ("adam_m", ckpt.adam_m),
        ("adam_v", ckpt.adam_v),
    ):
        if params is None:
            continue
        for name, tensor in params.tensors.items():
            out[f"{prefix}/{name}"] = np.ascontiguousarray(tensor, dtype=np.float32)
    return out


def _crc(tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> int:
    """CRC-32 over the tensors (sorted by name), then the metadata without its ``crc32``."""
    crc = 0
    for name in sorted(tensors):
        crc = zlib.crc32(tensors[name].data, crc)
    body = {k: v for k, v in meta.items() if k != "crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode(), crc)


REQUIRED = {
    "config": dict,
    "arch_hash": str,
    "step": int,
    "adam_t": int,
    "scaler": dict,
    "rng": dict,
    "data": dict,
    "extra": dict,
    "crc32": int,
}


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically to ``path``."""
    from safetensors.numpy import save

    refuse_non_finite(path, ckpt)
    tensors = _tensors(ckpt)
    meta = {
        "magic": MAGIC,
        "version": VERSION,
        "config": ckpt.config.to_dict(),
        "arch_hash": ckpt.config.arch_hash(),
        "step": ckpt.step,
        "adam_t": ckpt.adam_t,
        "scaler": ckpt.scaler,
        "rng": ckpt.rng,
        "data": ckpt.data,
        "best_loss": ckpt.best_loss if np.isfinite(ckpt.best_loss) else None,
        "extra": ckpt.extra,
    }
    meta["crc32"] = _crc(tensors, meta)
    data = save(tensors, metadata={META_KEY: json.dumps(meta)})
    try:
        return atomic_write(path, data)
    except OSError as err:
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({err.strerror or err}); check the folder exists "
            "and has free space"
        ) from err


def refuse_non_finite(path: str | Path, ckpt: Checkpoint) -> None:
    """Never write NaN/inf weights: a resume or ``generate`` would silently use them."""
    if not np.isfinite(ckpt.params.flat).all():
        raise CheckpointError(
            f"{path}: refusing to write a checkpoint with non-finite (NaN/inf) weights; the "
            "file already there is left as it was"
        )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint without loading its tensors."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated (no safetensors header)")
            size = int.from_bytes(raw, "little")
            if size > path.stat().st_size - 8 or size > 100 * 2**20:
                raise CheckpointError(f"{path}: corrupt safetensors header size {size}")
            header = json.loads(handle.read(size))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupt safetensors header") from None
    try:
        meta = json.loads(header["__metadata__"][META_KEY])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path}: not an anetrain checkpoint (no '{META_KEY}' metadata)"
        ) from None
    if meta.get("magic") != MAGIC:
        raise CheckpointError(f"{path}: wrong magic {meta.get('magic')!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {meta.get('version')} is not supported "
            f"(this anetrain reads version {VERSION})"
        )
    for key, kind in REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: corrupt metadata (field '{key}' missing or invalid)")
    return meta


def load_checkpoint(path: str | Path, expect: ModelConfig | None = None) -> Checkpoint:
    """Read and verify a checkpoint; ``expect`` refuses another architecture, naming the
    differing fields."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    meta = read_metadata(path)
    try:
        config = from_dict(meta["config"], source=str(path))
    except AnetrainError as err:
        raise CheckpointError(f"{path}: corrupt metadata (config: {err})") from None
    if config.arch_hash() != meta["arch_hash"]:
        raise CheckpointError(f"{path}: architecture hash does not match its own config")
    if expect is not None and expect.arch_hash() != config.arch_hash():
        diffs = [d for d in config.diff(expect) if not d.startswith("seq_len")]
        raise CheckpointError(
            f"{path}: checkpoint is for another architecture ({'; '.join(diffs)}); "
            "train with the checkpoint's --model/--config or start a new run"
        )
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated tensor data ({err})") from None
    if _crc(tensors, meta) != meta["crc32"]:
        raise CheckpointError(f"{path}: contents do not match their CRC-32 (corrupt file)")
    lora = meta["extra"].get("lora")
    try:
        adapters = None if lora is None else LoraConfig.from_dict(lora["config"])
        if adapters is not None and not isinstance(lora["base"]["id"], str):
            raise TypeError("base id")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt LoRA metadata ({err!r})") from None
    groups = {
        prefix: _group(tensors, prefix, config, path, adapters)
        for prefix in ("param", "adam_m", "adam_v")
    }
    if groups["param"] is None:
        raise CheckpointError(f"{path}: holds no parameters")
    best = meta.get("best_loss")
    return Checkpoint(
        config=config,
        params=groups["param"],
        step=meta["step"],
        adam_m=groups["adam_m"],
        adam_v=groups["adam_v"],
        adam_t=meta["adam_t"],
        scaler=meta["scaler"],
        rng=meta["rng"],
        data=meta["data"],
        best_loss=float("inf") if best is None else float(best),
        extra=meta["extra"],
    )


def _group(
    tensors: dict[str, np.ndarray],
    prefix: str,
    config: ModelConfig,
    path: Path,
    lora: LoraConfig | None = None,
) -> Params | Adapters | None:
    """The tensors under ``prefix/``: model parameters, or LoRA adapters when ``lora``."""
    names = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
    if not names:
        return None
    params = Params(config) if lora is None else Adapters(config, lora)
    missing = set(params.tensors) - set(names)
    if missing:
        raise CheckpointError(f"{path}: {prefix} tensors missing: {', '.join(sorted(missing))}")
    for name, target in params.tensors.items():
        if names[name].shape != target.shape:
            raise CheckpointError(
                f"{path}: {prefix}/{name} has shape {list(names[name].shape)}, expected "
                f"{list(target.shape)}"
            )
        target[...] = names[name]
    return params
