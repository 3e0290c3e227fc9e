"""The training loop: data, kernel pipeline, AdamW, loss scaling, telemetry and checkpoints.

One optimizer step processes ``accum`` windows of ``seq_len`` tokens through the kernel
pipeline, then clips, steps AdamW (skipping on inf/NaN gradients) and re-stages the weights
into the kernels' input surfaces. Everything a resumed run needs (weights, Adam moments, scaler,
sampler position, RNG) is in the checkpoint, so N steps straight and N/2 + resume + N/2 give the
same losses bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anetrain.data.tokens import TokenFile
from anetrain.errors import AnetrainError
from anetrain.fsutil import atomic_write
from anetrain.mil.types import FP16, FP32
from anetrain.model import reference
from anetrain.model.config import ModelConfig
from anetrain.model.params import Params, init_params
from anetrain.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from anetrain.train.optim import AdamW, AdamWConfig, clip_by_global_norm
from anetrain.train.pipeline import DynamicPipeline, used_token_ids
from anetrain.train.scaler import LossScaler
from anetrain.train.schedule import CosineSchedule

LAST = "ckpt_last.safetensors"
BEST = "ckpt_best.safetensors"


class TrainError(AnetrainError):
    """The run cannot start or continue (bad arguments, data or checkpoint)."""


@dataclass
class TrainConfig:
    steps: int = 300
    lr: float = 3e-3
    accum: int = 4
    warmup: int = 20
    min_lr_ratio: float = 0.1
    clip: float = 1.0
    weight_decay: float = 0.1
    loss_scale: float = 256.0
    dynamic_loss_scale: bool = False
    seed: int = 42
    eval_every: int = 50
    eval_windows: int = 8
    ckpt_every: int = 100
    backend: str = "sim"
    chip: str | None = None
    fp16: bool = True


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    grad_norm: float
    loss_scale: float
    skipped: bool
    ms: float
    tokens_per_s: float
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "phases"}
        out["type"] = "step"
        out.update({f"{k}_ms": v for k, v in self.phases.items()})
        return out


class Trainer:
    """Owns the model state and the pipeline for one run directory."""

    def __init__(
        self,
        model: ModelConfig,
        data: TokenFile,
        train: TrainConfig,
        out_dir: Path,
        *,
        resume: bool = False,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> None:
        if model.seq_len + 1 > len(data.train):
            raise TrainError(f"training data has fewer than seq_len+1={model.seq_len + 1} tokens")
        self.model = model
        self.data = data
        self.cfg = train
        self.out = out_dir
        self.on_step = on_step
        self.sampler = data.sampler("train", seq_len=model.seq_len, seed=train.seed)
        self.params = init_params(model, train.seed)
        self.grads = self.params.zeros_like()
        self.adam = AdamW(
            self.params.flat.size,
            self.params.decay_mask(),
            AdamWConfig(weight_decay=train.weight_decay),
        )
        self.scaler = LossScaler(train.loss_scale, dynamic=train.dynamic_loss_scale)
        self.schedule = CosineSchedule(
            train.lr, train.steps, min(train.warmup, train.steps), train.min_lr_ratio
        )
        self.step = 0
        self.best_loss = math.inf
        self.history: list[float] = []
        if resume:
            self._resume()
        used = used_token_ids(np.asarray(data.tokens), model.vocab_size)
        start = time.perf_counter()
        self.pipeline = DynamicPipeline(
            model,
            backend=train.backend,
            chip=train.chip,
            dtype=FP16 if train.fp16 else FP32,
            used_ids=used,
        )
        self.pipeline.stage_weights(self.params)
        self.compile_s = time.perf_counter() - start
        self.train_s = 0.0
        self.kernel_ms = 0.0
        self.out.mkdir(parents=True, exist_ok=True)  # only once the kernels compiled
        metrics = self.out / "metrics.jsonl"
        if resume and metrics.exists():  # drop records written after the checkpoint
            kept = [
                line
                for line in metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step
            ]
            atomic_write(metrics, "".join(line + "\n" for line in kept).encode())
        self._metrics = metrics.open("a" if resume else "w")

    # ---- state ----------------------------------------------------------------------------

    def _resume(self) -> None:
        path = self.out / LAST
        if not path.exists():
            raise TrainError(f"--resume: no checkpoint at {path}; start without --resume")
        ckpt = load_checkpoint(path, expect=self.model)
        self.params.flat[...] = ckpt.params.flat
        if ckpt.adam_m is None or ckpt.adam_v is None:
            raise TrainError(f"{path}: has no optimizer state, cannot resume training from it")
        self.adam.load_state_dict({"m": ckpt.adam_m.flat, "v": ckpt.adam_v.flat, "t": ckpt.adam_t})
        self.scaler.load_state_dict(ckpt.scaler)  # type: ignore[arg-type]
        self.sampler.load_state_dict(ckpt.data)
        self.step = ckpt.step
        self.best_loss = ckpt.best_loss

    def checkpoint(self) -> Checkpoint:
        m, v = Params(self.model), Params(self.model)
        m.flat[...] = self.adam.m
        v.flat[...] = self.adam.v
        return Checkpoint(
            config=self.model,
            params=self.params,
            step=self.step,
            adam_m=m,
            adam_v=v,
            adam_t=self.adam.t,
            scaler=self.scaler.state_dict(),
            data=self.sampler.state_dict(),
            best_loss=self.best_loss,
            extra={"train": asdict(self.cfg), "vocab_ids": self.vocab_ids()},
        )

    def vocab_ids(self) -> list[int] | None:
        """The token ids the classifier was trained over (None: the whole vocabulary)."""
        ids = self.pipeline.vocab.ids
        return None if ids.size == self.model.vocab_size else ids.tolist()

    def save(self, val_loss: float | None = None) -> None:
        """Write the last checkpoint; copy it to best when ``val_loss`` improves."""
        if val_loss is not None and val_loss < self.best_loss:
            self.best_loss = val_loss
            improved = True
        else:
            improved = False
        path = save_checkpoint(self.out / LAST, self.checkpoint())
        if improved:
            tmp = self.out / f".{BEST}.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, self.out / BEST)

    # ---- training -------------------------------------------------------------------------

    def train_step(self) -> StepRecord:
        cfg = self.cfg
        start = time.perf_counter()
        lr = self.schedule(self.step)
        scale = self.scaler.scale
        grad_scale = 1.0 / (cfg.accum * scale)
        self.grads.flat[...] = 0.0
        loss = 0.0
        for _ in range(cfg.accum):
            window = self.sampler.next_window()
            loss += self.pipeline.forward_backward(
                self.params, self.grads, window.inputs, window.targets, scale, grad_scale
            )
        loss /= cfg.accum
        self.pipeline.wait()
        finite = bool(np.isfinite(self.grads.flat).all())
        norm = clip_by_global_norm(self.grads.flat, cfg.clip) if finite else math.inf
        apply = self.scaler.update(finite)
        if apply:
            self.adam.step(self.params.flat, self.grads.flat, lr)
            self.pipeline.stage_weights(self.params)
        elapsed = time.perf_counter() - start
        phases = self.pipeline.timer.take()
        self.train_s += elapsed
        self.kernel_ms += phases["kernels"]
        self.step += 1
        tokens = cfg.accum * self.model.seq_len
        return StepRecord(
            self.step, loss, lr, norm, scale, not apply, elapsed * 1e3, tokens / elapsed, phases
        )

    def validate(self) -> float:
        """Mean loss over the first ``eval_windows`` validation windows (NumPy reference)."""
        vocab = self.pipeline.vocab  # the same compacted softmax as training
        losses = []
        for w in self.data.sequential_windows(
            "val", self.model.seq_len, max_windows=self.cfg.eval_windows
        ):
            logits, _, _ = reference.forward(self.params, w.inputs[None])
            sub = logits[0][:, vocab.ids].astype(np.float64)  # [S, CV]
            picked = sub[np.arange(len(w.targets)), vocab.compact(w.targets)]
            top = sub.max(axis=1)
            lse = top + np.log(np.exp(sub - top[:, None]).sum(axis=1))
            losses.append(float(np.mean(lse - picked)))
        return float(np.mean(losses)) if losses else math.nan

    def log(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(finite_or_none(record)) + "\n")
        self._metrics.flush()

    def run(self) -> dict[str, Any]:
        """Train to ``steps``. Ctrl-C stops after the current step, with a checkpoint saved
        (a second Ctrl-C aborts at once)."""
        wall_start = time.perf_counter()
        first_loss = None
        with _stop_on_interrupt() as stop:
            while self.step < self.cfg.steps and not stop.requested:
                record = self.train_step()
                first_loss = record.loss if first_loss is None else first_loss
                self.history.append(record.loss)
                self.log(record.to_json())
                if self.on_step is not None:
                    self.on_step(record)
                val = None
                if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps:
                    val = self.validate()
                    self.log({"type": "val", "step": self.step, "val_loss": val})
                improved = val is not None and val < self.best_loss
                due = self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps
                if due or improved or stop.requested:
                    self.save(val)
        self._metrics.close()
        self.pipeline.close()
        summary = self.summary(time.perf_counter() - wall_start, first_loss)
        summary["interrupted"] = stop.requested
        return summary

    def summary(self, wall_s: float, first_loss: float | None) -> dict[str, Any]:
        steps_run = len(self.history)
        flops = self.pipeline.flops_per_window() * self.cfg.accum * steps_run
        kernel_s = self.kernel_ms / 1e3
        chip = self.pipeline.backend.chip
        tflops = flops / kernel_s / 1e12 if kernel_s > 0 else math.nan
        peak = (chip.rated_tops or math.nan) / 2  # rated figures are INT8 TOPS
        modeled = self.pipeline.modeled_ms_per_window()
        modeled_step = None if modeled is None else modeled * self.cfg.accum
        modeled_tflops = (
            flops / steps_run / (modeled_step / 1e3) / 1e12 if modeled_step and steps_run else None
        )
        return {
            "modeled_ane_ms_per_step": modeled_step,
            "modeled_kernel_tflops": modeled_tflops,
            "modeled_utilization_pct": 100 * modeled_tflops / peak if modeled_tflops else None,
            "steps": self.step,
            "steps_this_run": steps_run,
            "first_loss": first_loss,
            "final_loss": self.history[-1] if self.history else None,
            "best_val_loss": None if math.isinf(self.best_loss) else self.best_loss,
            "skipped_steps": self.scaler.skipped,
            "wall_s": wall_s + self.compile_s,
            "compile_s": self.compile_s,
            "train_s": self.train_s,
            "ms_per_step": self.train_s / max(steps_run, 1) * 1e3,
            "tokens_per_s": steps_run
            * self.cfg.accum
            * self.model.seq_len
            / max(self.train_s, 1e-9),
            "kernel_s": kernel_s,
            "kernel_flops": flops,
            "kernel_tflops": tflops,
            "chip": chip.name,
            "chip_peak_fp16_tflops": peak,
            "utilization_pct": 100 * tflops / peak if peak else math.nan,
            "backend": self.pipeline.backend.name,
            "kernels_compiled": len(self.pipeline.kernels),
        }


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(finite_or_none(obj), indent=2, default=_jsonable, allow_nan=False)
    atomic_write(path, (text + "\n").encode())


def finite_or_none(obj: Any) -> Any:
    """Strict JSON has no NaN/Infinity: non-finite floats become null."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[_StopFlag]:
    """Turn the first SIGINT into a request to stop between steps (main thread only)."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
