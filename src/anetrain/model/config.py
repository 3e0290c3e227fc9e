"""Model architecture: one frozen dataclass, named presets as data, a validated TOML loader.

Dimension glossary (used across ``anetrain.model``): ``D`` dim, ``H`` FFN hidden, ``L`` layers,
``NH`` query heads, ``KVH`` key/value heads, ``HD`` head dim, ``QD = NH*HD``, ``KVD = KVH*HD``,
``V`` vocab, ``S``/``T`` sequence, ``B`` batch. Llama-style: pre-RMSNorm, interleaved-pair RoPE,
GQA with ``kv = h // (NH // KVH)``, SwiGLU, tied (or separate) classifier, no biases; ``qk_norm``
adds Qwen3's per-head RMSNorm on queries and keys before RoPE. Hugging Face checkpoints rotate
half-split pairs instead; their q/k rows are permuted exactly at load (``anetrain.model.hf``), so
one RoPE convention runs everywhere. Not here: training hyper-parameters (``anetrain.train``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anetrain.errors import AnetrainError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(AnetrainError, ValueError):
    """A model configuration is invalid; ``source`` names the file or preset it came from."""


class ConfigKeyError(ConfigError):
    """An unknown key or preset name (the message suggests the closest valid one)."""


class ConfigTypeError(ConfigError, TypeError):
    """A field has the wrong type (e.g. a string where an int is required)."""


class ConfigValueError(ConfigError):
    """A field has an invalid value or fields are mutually inconsistent."""


# Fields that do not change the parameter tensors or the function they compute.
_NON_ARCH_FIELDS = frozenset({"seq_len"})
# Fields added after checkpoints existed: left out of the architecture hash at their default, so
# every older checkpoint keeps its hash.
_HASH_OPTIONAL_DEFAULTS: dict[str, Any] = {"qk_norm": False}


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-style decoder. ``n_kv_heads=0``: ``n_heads``; ``head_dim=0``: ``dim // n_heads``."""

    dim: int  # D, residual stream width
    n_layers: int  # L
    n_heads: int  # NH, query heads
    hidden_dim: int  # H, SwiGLU hidden width
    vocab_size: int  # V
    n_kv_heads: int = 0  # KVH; 0 -> n_heads (MHA)
    head_dim: int = 0  # HD; 0 -> dim // n_heads (Qwen3 sets it explicitly)
    seq_len: int = 256  # S, training window and default generation limit
    norm_eps: float = 1e-5  # RMSNorm epsilon inside the sqrt
    rope_base: float = 10000.0  # theta_i(pos) = pos / rope_base^(2i/HD)
    tied_embeddings: bool = True  # classifier = embedding; False adds an lm_head [V, D]
    residual_scaling: bool = False  # x + alpha*branch, alpha = 1/sqrt(2L) (dynamic pipeline)
    qk_norm: bool = False  # Qwen3: per-head RMSNorm (weights [HD]) on q and k before RoPE

    def __post_init__(self) -> None:
        _check_types(self, "ModelConfig")
        if self.n_kv_heads == 0:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim == 0 and self.n_heads > 0:
            if self.dim % self.n_heads != 0:
                raise ConfigValueError(
                    f"dim ({self.dim}) is not divisible by n_heads ({self.n_heads}); "
                    "change one, or set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        _check_values(self)

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def qd(self) -> int:
        """QD = NH * HD, the width of Q and of the attention output."""
        return self.n_heads * self.head_dim

    @property
    def kvd(self) -> int:
        """KVD = KVH * HD, the width of K and V."""
        return self.n_kv_heads * self.head_dim

    @property
    def gqa_ratio(self) -> int:
        """Query heads per KV head; query head ``h`` reads KV head ``h // gqa_ratio``."""
        return self.n_heads // self.n_kv_heads

    @property
    def res_alpha(self) -> float:
        """Residual branch scale: 1/sqrt(2L) with residual_scaling, else 1.0 (maderix/ANE
        ``training/training_dynamic/train.m``, DeepNet residual scaling)."""
        return 1.0 / math.sqrt(2 * self.n_layers) if self.residual_scaling else 1.0

    @property
    def n_params_layer(self) -> int:
        """Parameters of one transformer block."""
        d, h = self.dim, self.hidden_dim
        qk = 2 * self.head_dim if self.qk_norm else 0
        return 2 * d * self.qd + 2 * d * self.kvd + 3 * d * h + 2 * d + qk

    @property
    def n_params(self) -> int:
        """Total parameters, counting a tied embedding once (stories110m: 109.53M)."""
        head = 0 if self.tied_embeddings else self.vocab_size * self.dim
        return self.vocab_size * self.dim + self.n_layers * self.n_params_layer + self.dim + head

    # --- identity ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def arch_dict(self) -> dict[str, Any]:
        """The fields that define the weights and the function (everything but seq_len; later
        fields only when they differ from their default)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in _NON_ARCH_FIELDS
            and not (k in _HASH_OPTIONAL_DEFAULTS and v == _HASH_OPTIONAL_DEFAULTS[k])
        }

    def arch_hash(self) -> str:
        """Stable 16-hex hash of :meth:`arch_dict`; checkpoints store it to refuse mismatches."""
        blob = json.dumps(self.arch_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def diff(self, other: ModelConfig) -> list[str]:
        """Human-readable differences, e.g. ``["dim: 64 -> 128"]`` (empty when equal)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]

    def replace(self, **changes: Any) -> ModelConfig:
        """A validated copy with some fields changed."""
        return from_dict({**self.to_dict(), **changes}, source="replace()")

    def to_toml(self) -> str:
        """The TOML text :func:`load_config` reads back to an equal config."""
        lines = []
        for k, v in self.to_dict().items():
            lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}")
        return "\n".join(lines) + "\n"


# --- presets ---------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # Offline CPU default: ~0.9M params, vocab matches the built-in 512-token BPE tokenizer.
    # hidden = 8/3 * 128 rounded up to a multiple of 32.
    "tiny": dict(dim=128, n_layers=4, n_heads=4, hidden_dim=352, vocab_size=512, seq_len=128),
    # karpathy/tinyllamas shapes (llama2.c), Llama-2 32K vocab.
    "stories15m": dict(dim=288, n_layers=6, n_heads=6, hidden_dim=768, vocab_size=32000),
    "stories42m": dict(dim=512, n_layers=8, n_heads=8, hidden_dim=1376, vocab_size=32000),
    "stories110m": dict(dim=768, n_layers=12, n_heads=12, hidden_dim=2048, vocab_size=32000),
    # Qwen/Qwen3-0.6B config.json: GQA 16/8, explicit head_dim (QD = 2048 != dim), QK-norm,
    # rope_theta 1e6, rms_norm_eps 1e-6, tied embeddings, vocab 151,936 (the classifier trains
    # over the ids the data uses: CompactVocab).
    "qwen3-0.6b": dict(
        dim=1024,
        n_layers=28,
        n_heads=16,
        n_kv_heads=8,
        head_dim=128,
        hidden_dim=3072,
        vocab_size=151936,
        norm_eps=1e-6,
        rope_base=1000000.0,
        qk_norm=True,
    ),
}


def preset(name: str) -> ModelConfig:
    """A named configuration (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ConfigKeyError(f"unknown model config {name!r}{_suggest(name, PRESETS)}")
    return from_dict(PRESETS[name], source=f"preset {name!r}")


def load_config(name_or_path: str | Path) -> ModelConfig:
    """A preset name, or a TOML file of ModelConfig fields.

    The file holds the fields at top level or in a ``[model]`` table. An optional
    ``base = "<preset>"`` key starts from a preset and overrides the listed fields.
    """
    name = str(name_or_path)
    if name in PRESETS:
        return preset(name)
    path = Path(name)
    if not path.is_file():
        if path.suffix == "" and "/" not in name:
            raise ConfigKeyError(f"unknown model config {name!r}{_suggest(name, PRESETS)}")
        raise ConfigError(f"{name}: config file not found")
    try:
        # utf-8-sig: a leading byte-order mark (as some Windows editors save) is dropped
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8, re-save it as UTF-8"
        ) from None
    if "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    return from_dict(data, source=str(path))


def from_dict(data: Mapping[str, Any], *, source: str = "<dict>") -> ModelConfig:
    """Validate a mapping of fields (plus optional ``base``); errors name ``source``."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    values = dict(data)
    base = values.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigTypeError(f"{source}: base must be a preset name string, got {base!r}")
        if base not in PRESETS:
            raise ConfigKeyError(f"{source}: unknown base {base!r}{_suggest(base, PRESETS)}")
        values = {**PRESETS[base], **values}
    for key in values:
        if key not in fields:
            raise ConfigKeyError(f"{source}: unknown key {key!r}{_suggest(key, fields)}")
    try:
        return ModelConfig(**values)
    except ConfigError as e:
        raise type(e)(f"{source}: {e}") from None
    except TypeError as e:  # missing required fields
        required = [
            f.name
            for f in dataclasses.fields(ModelConfig)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = ", ".join(name for name in required if name not in values)
        if not missing:
            raise ConfigKeyError(f"{source}: {e}") from None
        raise ConfigKeyError(
            f"{source}: missing {missing}; set them (at top level or under [model]), or "
            f'start from a preset with base = "<preset>" (one of {", ".join(PRESETS)})'
        ) from None


# --- validation ------------------------------------------------------------------------------


def _check_types(cfg: ModelConfig, where: str) -> None:
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif kind == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            if ok:
                object.__setattr__(cfg, f.name, float(v))
        else:
            ok = isinstance(v, bool)
        if not ok:
            raise ConfigTypeError(f"{f.name} must be {kind}, got {type(v).__name__} {v!r}")


def _check_values(cfg: ModelConfig) -> None:
    for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_dim"):
        if getattr(cfg, name) <= 0:
            raise ConfigValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("vocab_size", "seq_len"):
        if getattr(cfg, name) <= 0:
            raise ConfigValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    if not (cfg.norm_eps > 0 and math.isfinite(cfg.norm_eps)):
        raise ConfigValueError(f"norm_eps must be positive, got {cfg.norm_eps}")
    if not (cfg.rope_base > 1 and math.isfinite(cfg.rope_base)):
        raise ConfigValueError(f"rope_base must be > 1, got {cfg.rope_base}")
    if cfg.n_heads % cfg.n_kv_heads != 0:
        raise ConfigValueError(
            f"n_heads ({cfg.n_heads}) is not divisible by n_kv_heads ({cfg.n_kv_heads})"
        )
    if cfg.head_dim % 2 != 0:
        raise ConfigValueError(f"head_dim ({cfg.head_dim}) must be even: RoPE rotates pairs")


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid: {', '.join(sorted(choices))}"
