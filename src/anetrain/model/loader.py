"""One loader for every model format: detection and typed results for train, generate, export.

Formats (:data:`FORMATS`):
- ``anetrain``: our safetensors checkpoint, or a run folder (its best checkpoint, else its last);
- ``hf``: a local Hugging Face ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` folder;
- ``original``: a maderix/ANE ``BLZT`` training checkpoint (magic bytes);
- ``llama2c``: a llama2.c model file (v1 magic; v0 has none, so it is the fallback, and its
  reader checks the size against its header exactly).
A name that is not a local path but looks like a hub id (``org/name``) is refused: nothing is
ever downloaded.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anetrain.model._io import ModelFileError
from anetrain.model.checkpoint import CheckpointError, load_checkpoint
from anetrain.model.config import ModelConfig
from anetrain.model.hf import INDEX as HF_INDEX
from anetrain.model.hf import WEIGHTS as HF_WEIGHTS
from anetrain.model.hf import import_hf, is_hf_folder, looks_like_hub_id
from anetrain.model.llama2c import MAGIC_V1, import_llama2c
from anetrain.model.lora import ADAPTER_CONFIG, Adapters, LoraError, base_fingerprint
from anetrain.model.original import MAGIC as BLZT
from anetrain.model.original import import_original_checkpoint
from anetrain.model.params import Params
from anetrain.runfolder import CKPT_BEST, CKPT_LAST, checkpoint_in
from anetrain.runfolder import CONFIG as RUN_CONFIG

ModelFormat = Literal["anetrain", "hf", "original", "llama2c"]
FORMATS: dict[str, str] = {
    "anetrain": "anetrain checkpoint",
    "hf": "Hugging Face model folder",
    "original": "maderix BLZT checkpoint",
    "llama2c": "llama2.c model",
}


@dataclass
class LoadedModel:
    """A model ready to sample from, train from or export, and where it came from."""

    path: Path  # the file (or Hugging Face folder) actually read
    kind: ModelFormat
    config: ModelConfig
    params: Params
    tokenizer: str | None = None  # the tokenizer recorded with the model or run, if any
    step: int | None = None
    notes: list[str] = field(default_factory=list)
    vocab_ids: list[int] | None = None  # the ids a compacted classifier was trained over
    hf_config: dict[str, Any] | None = None  # the source config.json (kept for export hf)
    adapters: Adapters | None = None  # a LoRA run's adapters (params are then base + them)
    base: str | None = None  # a LoRA run's base model, as recorded

    @property
    def description(self) -> str:
        return FORMATS[self.kind]


def detect_format(path: Path) -> ModelFormat:
    """The format of a file or folder (see the module docstring); raises for a missing path."""
    if path.is_dir():
        # Hugging Face weights mark the folder even when its config.json is missing or broken,
        # so the import names that file instead of asking for a run's checkpoints.
        hf_weights = (path / HF_WEIGHTS).is_file() or (path / HF_INDEX).is_file()
        return "hf" if hf_weights or is_hf_folder(path) else "anetrain"
    if path.suffix == ".safetensors":
        return "anetrain"
    head = _head(path, 9)
    if head[:4] == struct.pack("<I", BLZT):
        return "original"
    if head[:4] == struct.pack("<I", MAGIC_V1):
        return "llama2c"
    # safetensors: u64 header length, then the JSON header's "{"
    size = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and size <= path.stat().st_size - 8:
        return "anetrain"
    return "llama2c"


def load_model(
    spec: str | Path,
    *,
    find_tokenizer: bool = True,
    seq_len: int | None = None,
) -> LoadedModel:
    """Load any supported model; errors are one-line :class:`ModelFileError` subclasses.

    ``find_tokenizer`` consults a run folder's config.json (or a Hugging Face folder's
    tokenizer.json) for the tokenizer; ``seq_len`` sets a Hugging Face model's window.
    Callers check the memory first (``anetrain.memory.check_model_load``).
    """
    path = Path(spec)
    if not path.exists():
        if looks_like_hub_id(str(spec)):
            raise ModelFileError(
                f"{spec}: no such local folder; this looks like a Hugging Face hub id, but "
                "anetrain never downloads: fetch it first (e.g. `hf download "
                f"{spec} --local-dir DIR`) and pass DIR"
            )
        raise CheckpointError(f"{path}: no such checkpoint file or run folder (nor model folder)")
    try:
        kind = detect_format(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    if kind == "hf":
        h = import_hf(path, seq_len)
        tok = str(h.tokenizer) if h.tokenizer is not None and find_tokenizer else None
        return LoadedModel(
            path, kind, h.config, h.params, tok, notes=h.notes, hf_config=h.hf_config
        )
    if kind == "anetrain":
        return _load_anetrain(path, find_tokenizer)
    if kind == "original":
        o = import_original_checkpoint(path)
        return LoadedModel(path, kind, o.config, o.params, None, o.header["step"], o.notes)
    try:
        config, params = import_llama2c(path)
    except ModelFileError as err:
        if _head(path, 4) == struct.pack("<I", MAGIC_V1):
            raise
        raise ModelFileError(
            f"{err}; it has no anetrain, BLZT or llama2.c v1 magic either, so it is not a model "
            "file anetrain can read"
        ) from None
    return LoadedModel(path, kind, config, params)


def _load_anetrain(path: Path, find_tokenizer: bool) -> LoadedModel:
    run_dir: Path | None = None
    if path.is_dir():
        run_dir = path
        found = checkpoint_in(run_dir)
        if found is None and (run_dir / ADAPTER_CONFIG).is_file():
            raise LoraError(
                f"{run_dir}: a PEFT adapter folder (adapters without their base); pass the run "
                "folder that holds its checkpoints (a LoRA run's adapter/ sits inside it), or "
                "load it with peft.PeftModel.from_pretrained onto its base"
            )
        if found is None:
            raise CheckpointError(
                f"{run_dir}: no {CKPT_BEST} or {CKPT_LAST} in this run folder (and no Hugging Face "
                "config.json); train into it first or pass a checkpoint file"
            )
        path = found
    elif (path.parent / RUN_CONFIG).is_file():
        run_dir = path.parent
    c = load_checkpoint(path)
    base = _lora_base(path, c.extra["lora"]["base"]) if isinstance(c.params, Adapters) else None
    try:
        run = _run_config(run_dir) if run_dir is not None else {}
    except CheckpointError:
        if find_tokenizer:  # the tokenizer was to come from it
            raise
        run = {}
    tokenizer = _run_tokenizer(run_dir, run) if run_dir is not None and find_tokenizer else None
    init = run.get("init") if isinstance(run.get("init"), dict) else {}
    if base is not None and isinstance(c.params, Adapters):
        if tokenizer is None and find_tokenizer:
            tokenizer = base.tokenizer
        return LoadedModel(
            path,
            "anetrain",
            c.config,
            c.params.merged(base.params),  # the base as stored: what peft merges into
            tokenizer,
            c.step,
            # the frozen base's classifier, not the fine-tuning data's ids: generation samples
            # what peft and the merged export compute (a Hugging Face base: every id)
            vocab_ids=base.vocab_ids,
            hf_config=base.hf_config or init.get("hf_config"),
            adapters=c.params,
            base=str(base.path),
        )
    assert isinstance(c.params, Params)
    return LoadedModel(
        path,
        "anetrain",
        c.config,
        c.params,
        tokenizer,
        c.step,
        vocab_ids=c.extra.get("vocab_ids"),
        hf_config=init.get("hf_config"),
    )


def _lora_base(ckpt: Path, record: dict[str, Any]) -> LoadedModel:
    """The base model a LoRA checkpoint records, refused unless it is the very one trained on."""
    where = record.get("path")
    if not where or not Path(where).exists():
        raise LoraError(
            f"{ckpt}: LoRA adapters for base {where!r}, which is not there; put the base model "
            "back at that path"
        )
    base = load_model(where, find_tokenizer=True)
    found = base_fingerprint(base.params.astype(np.float16))
    if found != record.get("id"):
        raise LoraError(
            f"{ckpt}: adapters were trained on base {record.get('id')}, but {where} is now "
            f"{found} (another model or changed weights); restore the original base"
        )
    return base


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable run config ({err})") from None
    return data if isinstance(data, dict) else {}


def _run_tokenizer(run_dir: Path, run: dict[str, Any]) -> str | None:
    """The ``tokenizer`` a run folder's config.json records (None if absent or null)."""
    spec = run.get("tokenizer")
    if spec is None or spec == "builtin":
        return spec
    spec = str(spec)
    # A relative path was relative to where training ran; also try the run folder.
    if not Path(spec).is_absolute() and not Path(spec).exists() and (run_dir / spec).exists():
        return str(run_dir / spec)
    return spec


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(n)
