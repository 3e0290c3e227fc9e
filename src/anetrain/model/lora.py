"""LoRA adapters: low-rank updates ``W + (alpha/r) B A`` of frozen projections, in one flat buffer.

Each targeted projection ``W [L, OUT, IN]`` gets ``A [L, r, IN]`` and ``B [L, OUT, r]``, all
views of one contiguous fp32 ``flat`` (as :class:`~anetrain.model.params.Params`), so zeroing,
clipping and AdamW stay single vector ops. Initialisation, scaling and file layout are those
of Hugging Face ``peft`` (``LoraConfig``, ``use_rslora=False``): ``A ~ U(+-1/sqrt(IN))`` (its
``kaiming_uniform_(a=sqrt(5))``), ``B = 0``, scaling ``alpha / r``.

The PEFT folder (``adapter_config.json``, ``adapter_model.safetensors``) uses the Hugging Face
layout: q/k rows are in Hugging Face's half-split RoPE order (``B``'s rows permuted back, as
:mod:`anetrain.model.hf` does for the weights) and a residual scale ``a`` is folded into the
``o``/``down`` ``B``, so ``peft.PeftModel.from_pretrained(base, folder)`` computes the same
function.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anetrain.errors import AnetrainError
from anetrain.model.config import ModelConfig
from anetrain.model.hf import _LAYER_KEYS, _ROPE_ROWS, _permute_heads, half_to_interleaved
from anetrain.model.params import Params

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# --lora-targets name -> anetrain parameter (Hugging Face module: q_proj ... down_proj)
TARGETS = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w1", "up": "w3", "down": "w2"}
DEFAULT_TARGETS = tuple(TARGETS)
_PREFIX = "base_model.model.model.layers"  # peft's key prefix for a *ForCausalLM


class LoraError(AnetrainError, ValueError):
    """A LoRA configuration or adapter file that cannot be used (one line: what and the fix)."""


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float
    targets: tuple[str, ...] = DEFAULT_TARGETS  # short names, keys of TARGETS, in its order
    dropout: float = 0.0

    @property
    def scaling(self) -> float:
        """peft's ``lora_alpha / r`` (rsLoRA off)."""
        return self.alpha / self.rank

    @property
    def params(self) -> tuple[str, ...]:
        """The anetrain parameters the adapters update, in target order."""
        return tuple(TARGETS[t] for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraConfig:
        return cls(int(d["rank"]), float(d["alpha"]), tuple(d["targets"]), float(d["dropout"]))


def lora_config(
    cfg: ModelConfig,
    rank: int,
    alpha: float | None = None,
    targets: str | tuple[str, ...] | None = None,
    dropout: float = 0.0,
) -> LoraConfig:
    """A checked :class:`LoraConfig` for ``cfg``; ``alpha`` defaults to ``rank`` (scaling 1)."""
    names = DEFAULT_TARGETS if targets is None else targets
    if isinstance(names, str):
        names = tuple(t.strip() for t in names.split(",") if t.strip())
    unknown = [t for t in names if t not in TARGETS]
    twice = [t for i, t in enumerate(names) if t in names[:i]]
    if unknown or twice or not names:
        what = "no target given"
        if unknown or twice:
            what = f"unknown target {unknown[0]!r}" if unknown else f"{twice[0]!r} given twice"
        raise LoraError(f"--lora-targets: {what}; choose from {','.join(TARGETS)}, each once")
    names = tuple(t for t in TARGETS if t in names)  # one order: layout, masks, resume checks
    shapes = _base_shapes(cfg)
    width = min(min(shapes[TARGETS[t]]) for t in names)
    if not 1 <= rank <= width:
        raise LoraError(
            f"--lora-rank {rank}: must be between 1 and {width} (the narrowest targeted "
            "projection's width)"
        )
    alpha = float(rank if alpha is None else alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise LoraError(f"--lora-alpha {alpha}: must be a positive number")
    if not (math.isfinite(dropout) and 0 <= dropout < 1):
        raise LoraError(
            f"--lora-dropout {dropout}: must be a probability in [0, 1) (peft's lora_dropout; "
            "0, the default, turns it off)"
        )
    return LoraConfig(int(rank), alpha, names, float(dropout))


def _base_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """anetrain parameter -> (OUT, IN) of one layer's projection."""
    D, H, QD, KVD = cfg.dim, cfg.hidden_dim, cfg.qd, cfg.kvd
    return {"wq": (QD, D), "wk": (KVD, D), "wv": (KVD, D), "wo": (D, QD), "w1": (H, D),
            "w3": (H, D), "w2": (D, H)}  # fmt: skip


class Adapters:
    """Named views ``"wq.A"`` ``[L, r, IN]`` and ``"wq.B"`` ``[L, OUT, r]`` of one flat buffer."""

    def __init__(self, cfg: ModelConfig, lora: LoraConfig, flat: np.ndarray | None = None) -> None:
        L, r = cfg.n_layers, lora.rank
        shapes: dict[str, tuple[int, ...]] = {}
        for name in lora.params:
            out, inp = _base_shapes(cfg)[name]
            shapes[f"{name}.A"] = (L, r, inp)
            shapes[f"{name}.B"] = (L, out, r)
        n = sum(math.prod(s) for s in shapes.values())
        if flat is None:
            flat = np.zeros(n, dtype=np.float32)
        if flat.shape != (n,) or not flat.flags.c_contiguous:
            raise ValueError(f"adapter buffer must be contiguous 1-D of {n} elements")
        self.config, self.lora, self.flat = cfg, lora, flat
        self.tensors: dict[str, np.ndarray] = {}
        off = 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            self.tensors[name] = flat[off : off + size].reshape(shape)
            off += size

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def zeros_like(self) -> Adapters:
        return Adapters(self.config, self.lora)

    def copy(self) -> Adapters:
        return Adapters(self.config, self.lora, self.flat.copy())

    def decay_mask(self) -> np.ndarray:
        return np.ones(self.flat.size, dtype=bool)

    def delta(self, name: str, layer: int) -> np.ndarray:
        """``(alpha/r) B A`` of one layer's projection ``name``: [OUT, IN] fp32."""
        s = np.float32(self.lora.scaling)
        return (self[f"{name}.B"][layer] * s) @ self[f"{name}.A"][layer]

    def merged(self, base: Params) -> Params:
        """fp32 model weights with every adapter folded in (export, validation, sampling)."""
        out = base.astype(np.float32)
        out = out.copy() if out is base else out
        for name in self.lora.params:
            for layer in range(self.config.n_layers):
                out[name][layer] += self.delta(name, layer)
        return out


def init_adapters(cfg: ModelConfig, lora: LoraConfig, seed: int = 42) -> Adapters:
    """peft's default init: ``A ~ U(+-1/sqrt(IN))``, ``B = 0`` (the model starts as the base)."""
    rng = np.random.default_rng(seed)
    a = Adapters(cfg, lora)
    for name in lora.params:
        t = a[f"{name}.A"]
        bound = np.float32(1 / math.sqrt(t.shape[-1]))
        rng.random(out=t, dtype=np.float32)
        t *= 2 * bound
        t -= bound
    return a


def lora_weight_grads(
    adapters: Adapters, grads: Adapters, name: str, layer: int, dout: np.ndarray, x: np.ndarray,
    g: float,
) -> None:  # fmt: skip
    """Adapter gradients of ``y = (W + s B A) x`` from ``dout = dL/dy [OUT, S]`` and ``x [IN, S]``:
    ``dA += g s B^T dout x^T``, ``dB += g s dout (A x)^T``. The frozen ``dW`` is never formed."""
    s = np.float32(adapters.lora.scaling * g)
    A, B = adapters[f"{name}.A"][layer], adapters[f"{name}.B"][layer]  # [r,IN], [OUT,r]
    grads[f"{name}.A"][layer] += (s * (B.T @ dout)) @ x.T  # [r,S] @ [S,IN]
    grads[f"{name}.B"][layer] += dout @ (s * (A @ x)).T  # [OUT,S] @ [S,r]


def base_fingerprint(base: Params) -> str:
    """Identifies a base model: architecture hash and a CRC-32 of its fp16 weights."""
    flat = np.ascontiguousarray(base.flat, dtype=np.float16)
    crc = 0
    for start in range(0, flat.size, 1 << 24):
        crc = zlib.crc32(flat[start : start + (1 << 24)].data, crc)
    return f"{base.config.arch_hash()}-{crc:08x}"


# --- the PEFT folder ---------------------------------------------------------------------------


def _peft_key(name: str, layer: int, part: str) -> str:
    module = _LAYER_KEYS[name].removesuffix(".weight")
    return f"{_PREFIX}.{layer}.{module}.lora_{part}.weight"


def _hf_rows(cfg: ModelConfig, name: str, b: np.ndarray, inverse: bool) -> np.ndarray:
    """``B``'s rows between anetrain's interleaved and Hugging Face's half-split RoPE order,
    with the residual scale folded in (export) or out (import)."""
    if name in _ROPE_ROWS:
        perm = half_to_interleaved(cfg.head_dim)
        b = _permute_heads(b, getattr(cfg, _ROPE_ROWS[name]), cfg.head_dim,
                           np.argsort(perm) if inverse else perm)  # fmt: skip
    if name in ("wo", "w2") and cfg.residual_scaling:
        a = np.float32(cfg.res_alpha)
        b = b * a if inverse else b / a
    return b


def peft_state_dict(adapters: Adapters) -> dict[str, np.ndarray]:
    """peft's ``adapter_model.safetensors`` tensors (Hugging Face layout, fp32)."""
    cfg, out = adapters.config, {}
    for name in adapters.lora.params:
        for i in range(cfg.n_layers):
            out[_peft_key(name, i, "A")] = np.ascontiguousarray(adapters[f"{name}.A"][i])
            b = _hf_rows(cfg, name, adapters[f"{name}.B"][i], inverse=True)
            out[_peft_key(name, i, "B")] = np.ascontiguousarray(b, dtype=np.float32)
    return out


def peft_config(lora: LoraConfig, base_name: str | None) -> dict[str, Any]:
    modules = sorted(_LAYER_KEYS[n].split(".")[1] for n in lora.params)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": lora.rank,
        "lora_alpha": int(lora.alpha) if lora.alpha.is_integer() else lora.alpha,  # as peft's
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }


def peft_folder_intact(folder: Path) -> bool:
    """Whether ``folder``'s adapter_config.json parses and adapter_model.safetensors' header
    does and matches the file's size (a cheap check, no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        json.loads((Path(folder) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        with safe_open(str(Path(folder) / ADAPTER_WEIGHTS), "np") as f:
            return bool(list(f.keys()))
    except (OSError, ValueError, SafetensorError):
        return False


def write_peft(folder: Path, adapters: Adapters, base_name: str | None) -> Path:
    """Write (or atomically replace) a PEFT adapter folder."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file(peft_state_dict(adapters), str(tmp / ADAPTER_WEIGHTS), {"format": "pt"})
        text = json.dumps(peft_config(adapters.lora, base_name), indent=2) + "\n"
        (tmp / ADAPTER_CONFIG).write_text(text, encoding="utf-8")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LoraError(
            f"{folder}: cannot write the adapter folder ({err.strerror or err})"
        ) from None
    return folder
