"""Hugging Face model folders: ``LlamaForCausalLM`` and ``Qwen3ForCausalLM`` in and out.

A folder holds ``config.json``, ``model.safetensors`` (or ``model.safetensors.index.json`` and
its shards) and usually ``tokenizer.json``. Only local folders are read: nothing is downloaded.

RoPE convention: Hugging Face rotates the half-split pairs ``(i, i + HD/2)`` of each head;
anetrain (like llama2.c) rotates interleaved pairs ``(2i, 2i + 1)``, with the same frequency for
pair ``i``. Rotating the permuted vector is the permuted rotation, and attention scores are dot
products that any permutation shared by q and k leaves unchanged, so importing permutes each
head's q/k projection rows (and the per-head q/k norm weights) by ``perm[2i] = i,
perm[2i+1] = i + HD/2``; exporting applies the inverse. The function is exactly the same; the
kernels keep one RoPE.

Weights map ``[out, in]`` to ``[out, in]`` with no transpose (``nn.Linear`` stores ``[out, in]``);
``tie_word_embeddings: false`` models keep their ``lm_head.weight`` as anetrain's ``lm_head``.
Stored dtypes F32, F16 and BF16 load as float32 (BF16 is widened bit-exactly). Export writes
float32 safetensors.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anetrain.model._io import ModelFileError
from anetrain.model.config import ConfigError, ModelConfig
from anetrain.model.params import Params

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# config.json's max_position_embeddings is the longest context; training windows are shorter.
DEFAULT_SEQ_LEN = 256
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3"}
# What transformers' LlamaConfig / Qwen3Config assume for a key config.json omits (None: derived,
# head_dim = hidden_size // num_attention_heads, num_key_value_heads = num_attention_heads).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"head_dim": None, "num_key_value_heads": None, "max_position_embeddings": 2048},
    "qwen3": {"head_dim": 128, "num_key_value_heads": 32, "max_position_embeddings": 32768},
}
_LAYER_KEYS = {  # anetrain name -> key inside model.layers.{i}.
    "rms_att": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight",
    "rms_ffn": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight",
    "w2": "mlp.down_proj.weight",
    "w3": "mlp.up_proj.weight",
    "q_norm": "self_attn.q_norm.weight",
    "k_norm": "self_attn.k_norm.weight",
}
_GLOBAL_KEYS = {
    "embed": "model.embed_tokens.weight",
    "rms_final": "model.norm.weight",
    "lm_head": "lm_head.weight",  # untied models only
}
_ROPE_ROWS = {"wq": "n_heads", "wk": "n_kv_heads", "q_norm": None, "k_norm": None}
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


class HFModelError(ModelFileError):
    """A Hugging Face folder is incomplete or describes a model anetrain cannot represent."""


@dataclass
class HFModel:
    """An imported folder: config, weights and the source config kept for the export."""

    config: ModelConfig
    params: Params
    hf_config: dict[str, Any]
    tokenizer: Path | None  # tokenizer.json, when the folder has one
    notes: list[str] = field(default_factory=list)


def is_hf_folder(path: Path) -> bool:
    """A folder whose config.json names a model type (a run folder's config.json does not)."""
    cfg = path / CONFIG
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data)


def looks_like_hub_id(spec: str) -> bool:
    """``org/name`` that is not a local path: what a user copying from the hub types."""
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not Path(spec).exists() and "." not in parts[0]


# --- config ------------------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], source: str, seq_len: int | None = None) -> ModelConfig:
    """Map a Llama/Qwen3 ``config.json`` to a :class:`ModelConfig`; anything unsupported is
    refused with the field and its value."""
    arch = _architecture(hf, source)

    def need(key: str) -> Any:
        if key not in hf:
            raise HFModelError(f"{source}: config.json has no {key!r} (required for {arch})")
        return hf[key]

    def refuse(key: str, value: Any, why: str) -> None:
        raise HFModelError(f"{source}: unsupported {key} = {json.dumps(value)} ({why})")

    if hf.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", hf["hidden_act"], "anetrain's FFN is SwiGLU with silu")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            refuse(key, hf[key], "anetrain's projections have no biases")
    if hf.get("use_sliding_window"):
        refuse("use_sliding_window", True, "anetrain attends over the whole window")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
    if rope_type != "default":
        refuse("rope_type", rope_type, "only unscaled RoPE is implemented")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        refuse("partial_rotary_factor", hf["partial_rotary_factor"], "RoPE covers whole heads")
    dim, n_heads = int(need("hidden_size")), int(need("num_attention_heads"))
    default = _DEFAULTS[arch]
    head_dim = hf.get("head_dim", default["head_dim"]) or dim // n_heads
    n_kv_heads = hf.get("num_key_value_heads", default["num_key_value_heads"]) or n_heads
    max_pos = int(hf.get("max_position_embeddings", default["max_position_embeddings"]))
    try:
        return ModelConfig(
            dim=dim,
            n_layers=int(need("num_hidden_layers")),
            n_heads=n_heads,
            n_kv_heads=int(n_kv_heads),
            head_dim=int(head_dim),
            hidden_dim=int(need("intermediate_size")),
            vocab_size=int(need("vocab_size")),
            seq_len=seq_len or min(max_pos, DEFAULT_SEQ_LEN),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_base=float(theta),
            qk_norm=arch == "qwen3",
            # transformers' default for both LlamaConfig and Qwen3Config: untied
            tied_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )
    except ConfigError as err:
        raise HFModelError(f"{source}: config.json describes an invalid model: {err}") from None


def config_to_hf(cfg: ModelConfig, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of ``cfg``: Qwen3 with QK-norm, else Llama (``base`` keeps the
    source folder's token ids and context length)."""
    base = base or {}
    arch = "Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM"
    out: dict[str, Any] = {
        "architectures": [arch],
        "model_type": ARCHITECTURES[arch],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max(cfg.seq_len, int(base.get("max_position_embeddings", 0))),
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
        "tie_word_embeddings": cfg.tied_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
        "dtype": "float32",
    }
    if not cfg.qk_norm:
        out["mlp_bias"] = False
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in base:
            out[key] = base[key]
    return out


def _architecture(hf: dict[str, Any], source: str) -> str:
    archs = hf.get("architectures") or []
    known = [a for a in archs if a in ARCHITECTURES]
    if known:
        return ARCHITECTURES[known[0]]
    if not archs and hf.get("model_type") in ARCHITECTURES.values():
        return str(hf["model_type"])
    shown = archs[0] if archs else hf.get("model_type")
    raise HFModelError(
        f"{source}: unsupported architectures = {json.dumps(shown)} (supported: "
        f"{', '.join(ARCHITECTURES)})"
    )


# --- RoPE permutation --------------------------------------------------------------------------


def half_to_interleaved(head_dim: int) -> np.ndarray:
    """``perm`` with ``ours[j] = hf[perm[j]]`` inside one head: ``perm[2i] = i,
    perm[2i+1] = i + HD/2``."""
    half = head_dim // 2
    return np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)


def _permute_heads(
    t: np.ndarray, n_heads: int | None, head_dim: int, perm: np.ndarray
) -> np.ndarray:
    """Rows of ``t`` ([heads*HD, in] or a [HD] norm weight) permuted within each head."""
    if n_heads is None:
        return t[perm]
    return t.reshape(n_heads, head_dim, -1)[:, perm].reshape(t.shape)


# --- import ------------------------------------------------------------------------------------


def import_hf(folder: str | Path, seq_len: int | None = None) -> HFModel:
    """Read a local Llama or Qwen3 folder into anetrain's layout (RoPE rows permuted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HFModelError(f"{folder}: not a folder")
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        raise HFModelError(f"{folder}: missing {CONFIG}; a Hugging Face model folder has one")
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HFModelError(f"{cfg_path}: unreadable JSON ({err})") from None
    if not isinstance(hf, dict):
        raise HFModelError(f"{cfg_path}: expected a JSON object")
    cfg = config_from_hf(hf, str(folder), seq_len)
    tensors = _read_weights(folder)
    params = Params(cfg)
    perm = half_to_interleaved(cfg.head_dim)
    notes = []
    for name, key in _GLOBAL_KEYS.items():
        if name in params.tensors:
            params[name][...] = _take(tensors, key, params[name].shape, folder)
    for name in params:
        if name in _GLOBAL_KEYS:
            continue
        for i in range(cfg.n_layers):
            key = f"model.layers.{i}.{_LAYER_KEYS[name]}"
            t = _take(tensors, key, params[name][i].shape, folder)
            if name in _ROPE_ROWS:
                heads = getattr(cfg, _ROPE_ROWS[name]) if _ROPE_ROWS[name] else None
                t = _permute_heads(t, heads, cfg.head_dim, perm)
            params[name][i] = t
    head = tensors.get("lm_head.weight")
    if (
        cfg.tied_embeddings
        and head is not None
        and not np.array_equal(_widen(head), params["embed"])
    ):
        raise HFModelError(
            f"{folder}: lm_head.weight differs from the embedding although "
            "tie_word_embeddings = true; fix config.json (set it to false) or the weights"
        )
    extra = sorted(set(tensors) - _expected_keys(cfg) - {"lm_head.weight"})
    if extra:
        raise HFModelError(
            f"{folder}: unsupported tensors {', '.join(extra[:3])}"
            f"{' ...' if len(extra) > 3 else ''} (not part of a {hf.get('model_type')} model "
            "anetrain implements)"
        )
    tok = folder / "tokenizer.json"
    max_pos = int(hf.get("max_position_embeddings", 0))
    if max_pos > cfg.seq_len:
        notes.append(f"context {max_pos} tokens; anetrain uses windows of {cfg.seq_len}")
    return HFModel(cfg, params, hf, tok if tok.is_file() else None, notes)


def _expected_keys(cfg: ModelConfig) -> set[str]:
    keys = {_GLOBAL_KEYS[n] for n in ("embed", "rms_final")}
    if not cfg.tied_embeddings:
        keys.add(_GLOBAL_KEYS["lm_head"])
    names = [n for n in _LAYER_KEYS if cfg.qk_norm or n not in ("q_norm", "k_norm")]
    for i in range(cfg.n_layers):
        keys |= {f"model.layers.{i}.{_LAYER_KEYS[n]}" for n in names}
    return keys


def _take(tensors: dict[str, np.ndarray], key: str, shape: tuple[int, ...], folder: Path) -> Any:
    if key not in tensors:
        raise HFModelError(f"{folder}: weights have no tensor {key!r}")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise HFModelError(
            f"{folder}: {key} has shape {list(t.shape)}, config.json implies {list(shape)}"
        )
    return _widen(t)


def _widen(t: np.ndarray) -> np.ndarray:
    """float32 copy; BF16 (stored as uint16 bits) is the upper half of a float32."""
    if t.dtype == np.dtype("<u2"):
        return (t.astype(np.uint32) << 16).view(np.float32)
    return t.astype(np.float32)


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors`` or the shards an index names (memory-mapped)."""
    single, index = folder / WEIGHTS, folder / INDEX
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / f for f in sorted(set(weight_map.values()))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise HFModelError(f"{index}: not a safetensors index ({err})") from None
        inside = folder.resolve()
        outside = [f for f in files if not f.resolve().is_relative_to(inside)]
        if outside:  # a shard is a file name in the folder, never a path out of it
            raise HFModelError(
                f"{index}: shard {outside[0]} lies outside {folder}; "
                "an index names shard files inside its own folder"
            )
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise HFModelError(f"{folder}: shard {missing[0]} named by {INDEX} is missing")
    else:
        raise HFModelError(
            f"{folder}: missing {WEIGHTS} (or {INDEX}); only safetensors weights are read"
        )
    out: dict[str, np.ndarray] = {}
    for f in files:
        out.update(_read_safetensors(f))
    return out


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The safetensors layout (u64 header size, JSON header, raw little-endian data) mapped
    directly, because NumPy has no bfloat16 for the library's NumPy reader to return."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if not 2 <= n <= size - 8:
            raise HFModelError(f"{path}: not a safetensors file (header size {n})")
        try:
            header = json.loads(fh.read(n))
        except ValueError as err:
            raise HFModelError(f"{path}: corrupt safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise HFModelError(f"{path}: corrupt safetensors header (not a JSON object)")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else None
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype, shape, (lo, hi) = _tensor_entry(path, key, info)
        if hi - lo != dtype.itemsize * math.prod(shape) or data is None or hi > data.size:
            raise HFModelError(f"{path}: tensor {key} lies outside the file (truncated?)")
        out[key] = data[lo:hi].view(dtype).reshape(shape)
    return out


def _tensor_entry(path: Path, key: str, info: Any) -> tuple[np.dtype, tuple[int, ...], list[int]]:
    """A header entry's dtype, shape and ``[begin, end)`` offsets, checked for type and sign."""
    dtype = _DTYPES.get(info.get("dtype")) if isinstance(info, dict) else None
    if isinstance(info, dict) and dtype is None:
        raise HFModelError(
            f"{path}: tensor {key} has unsupported dtype = {json.dumps(info.get('dtype'))} "
            "(F32, F16 and BF16 are read)"
        )
    shape, offsets = (info.get("shape"), info.get("data_offsets")) if dtype else (None, None)

    def ints(v: Any, n: int | None = None) -> bool:
        ok = isinstance(v, list) and all(type(i) is int and i >= 0 for i in v)
        return ok and (n is None or len(v) == n)

    if dtype is None or not ints(shape) or not ints(offsets, 2) or offsets[1] < offsets[0]:
        raise HFModelError(
            f"{path}: corrupt safetensors header entry for tensor {key} (expected dtype, shape "
            "and data_offsets [begin, end] of non-negative integers)"
        )
    return dtype, tuple(shape), offsets


# --- export ------------------------------------------------------------------------------------


def export_hf(
    out_dir: str | Path,
    params: Params,
    *,
    tokenizer: str | Path | None = None,
    base_config: dict[str, Any] | None = None,
) -> Path:
    """Write a folder ``AutoModelForCausalLM.from_pretrained`` loads with the same logits.

    Residual scaling (``x + a*W z``) is folded into ``wo``/``w2`` (the same function). The
    tokenizer folder's or file's ``tokenizer.json`` (and its config) is copied beside it.
    """
    from safetensors.numpy import save_file

    cfg = params.config
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HFModelError(f"{out}: folder exists and is not empty; choose a new --out")
    tok_files = _tokenizer_files(tokenizer) if tokenizer is not None else []
    p = params.astype(np.float32)
    perm_inv = np.argsort(half_to_interleaved(cfg.head_dim))
    tensors = {
        key: np.ascontiguousarray(p[name])
        for name, key in _GLOBAL_KEYS.items()
        if name in p.tensors
    }
    for name in p:
        if name in _GLOBAL_KEYS:
            continue
        for i in range(cfg.n_layers):
            t = p[name][i]
            if name in _ROPE_ROWS:
                heads = getattr(cfg, _ROPE_ROWS[name]) if _ROPE_ROWS[name] else None
                t = _permute_heads(t, heads, cfg.head_dim, perm_inv)
            if name in ("wo", "w2") and cfg.residual_scaling:
                t = t * np.float32(cfg.res_alpha)
            tensors[f"model.layers.{i}.{_LAYER_KEYS[name]}"] = np.ascontiguousarray(t)
    hf_cfg = config_to_hf(cfg.replace(residual_scaling=False), base_config)
    tmp = out.with_name(f".{out.name}.tmp")  # written beside, renamed when complete
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(hf_cfg, indent=2) + "\n", encoding="utf-8")
        for f in tok_files:
            shutil.copyfile(f, tmp / f.name)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HFModelError(f"{out}: cannot write the folder ({err.strerror or err})") from None
    return out


def _tokenizer_files(spec: str | Path) -> list[Path]:
    path = Path(spec)
    folder = path if path.is_dir() else path.parent
    main = path / "tokenizer.json" if path.is_dir() else path
    if main.name != "tokenizer.json" or not main.is_file():
        raise HFModelError(
            f"{spec}: the Hugging Face export needs a tokenizer.json (folder or file); this "
            "model's tokenizer is not one, pass --tokenizer DIR_OR_tokenizer.json"
        )
    return [main] + [folder / n for n in TOKENIZER_FILES[1:] if (folder / n).is_file()]
