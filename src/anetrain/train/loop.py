"""The training loop: data, kernel pipeline, AdamW, loss scaling, telemetry and checkpoints.

One optimizer step processes ``accum`` windows of ``seq_len`` tokens through the kernel
pipeline, then clips, steps AdamW (skipping on inf/NaN gradients) and re-stages the weights
(the dynamic pipeline writes surfaces; the static one recompiles, timed apart as compile time).
Everything a resumed run needs (weights, Adam moments, scaler, sampler position, RNG, and the
cumulative compile/train/wall time) is in the checkpoint, so N steps straight and N/2 + resume
+ N/2 give the same losses bit for bit. Under torchrun every rank runs this loop on its own
``accum`` windows and the ``world`` (train/distributed.py) sums the gradients, checks the ranks
agree before each checkpoint and lets rank 0 alone write.

The compile budget: when the next recompile would exceed the backend's per-process budget,
:meth:`Trainer.run` saves a checkpoint and returns with ``summary["restart"]`` set; the command
then re-executes itself with ``--resume`` (a new process frees the ANE compiler's leak).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from anetrain import perfmodel, runfolder
from anetrain.data.sharding import ShardedSampler
from anetrain.data.tokens import TokenFile
from anetrain.errors import AnetrainError
from anetrain.fsutil import atomic_write, atomic_writer, remove_stale_temps
from anetrain.hardware.chips import get_chip
from anetrain.memory import release_free_heap
from anetrain.mil.types import FP16, FP32
from anetrain.model import reference
from anetrain.model.config import ModelConfig
from anetrain.model.lora import peft_folder_intact
from anetrain.model.params import init_params
from anetrain.runfolder import (
    ADAPTER_DIR,
    CKPT_BEST,
    CKPT_LAST,
    METRICS,
    checkpoint_in,
    phase_key,
)
from anetrain.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from anetrain.train.distributed import SingleProcess
from anetrain.train.factory import make_backend, make_pipeline
from anetrain.train.optim import AdamW, AdamWConfig, all_finite, clip_factor, global_norm
from anetrain.train.pipeline import PRESTAGE_MAX_BYTES, used_token_ids
from anetrain.train.scaler import LossScaler
from anetrain.train.schedule import CosineSchedule
from anetrain.train.trainable import FullTrainable, LoraTrainable

# The softmax a run's loss is over (``--vocab``): ``data`` the token ids its data uses (as
# maderix/ANE trains from scratch: a 32K or 152K classifier costs only the ids in use), ``full``
# every id (what peft, mlx_lm.lora and transformers' Trainer optimize when fine-tuning: ids the
# data never shows are pushed down too), ``auto`` full from pretrained weights, data otherwise.
VOCABS = ("auto", "data", "full")

# Consecutive steps with non-finite gradients or loss after which the run stops: the dynamic
# scaler has backed off to its floor long before, so the model itself has diverged.
MAX_BAD_STEPS = 25


class TrainError(AnetrainError):
    """The run cannot start or continue (bad arguments, data or checkpoint)."""


def run_vocab(choice: str, *, pretrained: bool) -> str:
    """The vocabulary (``data`` or ``full``) a new run with ``--vocab choice`` trains over."""
    if choice == "auto":
        return "full" if pretrained else "data"
    return choice


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
    macos: str | None = None  # the chip's macOS version (default: the newest profile)
    fp16: bool = True
    pipeline: str = "dynamic"  # or "static" (see anetrain.train.factory)
    ane_extras: bool = False
    compile_budget: int | None = None  # sim only: replaces the chip's per-process budget
    vocab: str = "auto"  # see VOCABS; the Trainer resolves auto (its cfg holds data or full)

    def __post_init__(self) -> None:
        """Refuse values that would train silently wrong (NaN lr, zero intervals, ...)."""
        positive = {"steps": self.steps, "accum": self.accum, "eval_every": self.eval_every}
        positive |= {"ckpt_every": self.ckpt_every, "eval_windows": self.eval_windows}
        for name, value in positive.items():
            if value < 1:
                raise TrainError(f"{name} must be at least 1, got {value}")
        if self.warmup < 0:
            raise TrainError(f"warmup must be at least 0, got {self.warmup}")
        for name in ("lr", "loss_scale", "clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise TrainError(f"{name} must be a positive finite number, got {value}")
        for name in ("weight_decay", "min_lr_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise TrainError(f"{name} must be a finite number >= 0, got {value}")
        if self.vocab not in VOCABS:
            raise TrainError(f"vocab must be one of {', '.join(VOCABS)}, got {self.vocab!r}")


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
    compiles: int = 0  # this process's compiles so far
    windows: int = 1

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("phases", "windows")}
        out["type"] = "step"
        out.update({phase_key(k): v for k, v in self.phases.items()})
        out.update(runfolder.original_fields(self.phases, self.windows))
        return out


@dataclass
class RunTotals:
    """Cumulative figures of a run across its processes (budget restarts and resumes), kept
    in the checkpoint so the final Efficiency Report covers the whole run."""

    compile_s: float = 0.0
    train_s: float = 0.0
    wall_s: float = 0.0
    kernel_s: float = 0.0
    steps: int = 0  # optimizer steps trained (all processes)
    batches: int = 0  # recompiles of the weight-bearing kernels
    restarts: int = 0
    first_loss: float | None = None


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
        world: SingleProcess | None = None,
        trainable: FullTrainable | LoraTrainable | None = None,
        pretrained: bool = False,
    ) -> None:
        """``trainable``: what to optimize (default: every weight of a scratch-initialised
        model; :class:`~anetrain.train.trainable.LoraTrainable` for LoRA on a frozen base).
        ``pretrained``: the weights will come from a trained model (``--init``; a LoRA base
        always is), which makes ``vocab="auto"`` the full vocabulary."""
        data.require_windows(model.seq_len)  # both splits: validation runs at the last step
        self.model = model
        self.data = data
        self.cfg = train
        self.out = out_dir
        self.on_step = on_step
        self.world = world or SingleProcess()  # data-parallel ranks (train/distributed.py)
        self.sampler = ShardedSampler(
            data.sampler("train", seq_len=model.seq_len, seed=train.seed),
            self.world.rank,
            self.world.size,
        )
        if trainable is None:
            trainable = FullTrainable(init_params(model, train.seed))
        if trainable.lora is not None and train.pipeline != "dynamic":
            raise TrainError(
                f"--lora-rank needs --pipeline dynamic: the {train.pipeline} pipeline bakes every "
                "weight into its kernels and has no LoRA gradient path"
            )
        self.trainable = trainable
        self.chosen_vocab = train.vocab  # as asked: a resume resolves auto to the run's own
        pretrained = pretrained or trainable.lora is not None
        self.cfg = train = replace(train, vocab=run_vocab(train.vocab, pretrained=pretrained))
        self.params = trainable.params  # what the pipeline reads (a LoRA base is frozen fp16)
        self.grads = trainable.grads
        self.adam = AdamW(
            trainable.values.flat.size,
            trainable.values.decay_mask(),
            AdamWConfig(weight_decay=train.weight_decay),
        )
        self.scaler = LossScaler(train.loss_scale, dynamic=train.dynamic_loss_scale)
        self.schedule = CosineSchedule(
            train.lr, train.steps, min(train.warmup, train.steps), train.min_lr_ratio
        )
        self.step = 0
        self.best_loss = math.inf
        self.history: list[float] = []
        self.notes: list[str] = []  # warnings for the user (e.g. a resume that changes --steps)
        self.bad_steps = 0  # consecutive steps with non-finite gradients or loss
        self.val_loss_full: float | None = None  # the last full-vocabulary validation loss
        self.stopping = False  # every rank agreed to stop after this step
        self.comm_ms = 0.0
        self.resumed_world_size: int | None = None
        self._t0 = time.perf_counter()
        self.prior = RunTotals()  # what earlier processes of this run did
        if resume:
            self._resume()
        full = self.cfg.vocab == "full"
        used = None if full else used_token_ids(np.asarray(data.tokens), model.vocab_size)
        chip = get_chip(train.chip, train.macos) if train.macos else train.chip
        backend = make_backend(train.backend, chip, train.compile_budget)
        dtype = FP16 if train.fp16 else FP32
        self.pipeline = make_pipeline(
            train.pipeline, model, backend, dtype, used, ane_extras=train.ane_extras,
            adapters=trainable.kernel_adapters,
        )  # fmt: skip
        self.restart_due = False
        if self.pipeline.compiles_per_stage and self.world.size > 1:
            raise TrainError(
                "the static pipeline re-executes itself for the compile budget, which torchrun "
                "ranks cannot do together; train data-parallel with --pipeline dynamic"
            )
        if self._over_budget():
            be = self.pipeline.backend
            raise TrainError(
                f"compile budget {be.compile_budget} is below the {be.compile_count} + "
                f"{self.pipeline.compiles_per_stage} compiles one batch of this pipeline needs"
            )
        self.trainable.stage(self.pipeline)
        self.batches = 1 if self.pipeline.compiles_per_stage else 0
        self.train_s = 0.0
        self.kernel_ms = 0.0
        self._metrics: Any = None
        if not self.world.is_writer:
            return
        self.out.mkdir(parents=True, exist_ok=True)  # only once the kernels compiled
        remove_stale_temps(self.out)  # left by a run killed during an atomic write
        metrics = self.out / METRICS
        if resume and metrics.exists():
            atomic_write(metrics, _metrics_upto(metrics, self.step).encode())
        self._metrics = metrics.open("a" if resume else "w")
        if self.pipeline.compiles_per_stage:  # this process's first compiles
            compiles = self.pipeline.backend.compile_count
            self.log(runfolder.batch_record(self.step, self.compile_s * 1e3, compiles=compiles))

    # ---- state ----------------------------------------------------------------------------

    def _resume(self) -> None:
        """Rank 0 reads the last checkpoint; every rank gets its weights and state."""
        state = self.world.broadcast_state(
            self._load_last, lambda _: (self.trainable.values.flat, self.adam.m, self.adam.v)
        )
        self.notes += state["notes"]
        self.adam.t = state["adam_t"]
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["data"])
        self.resumed_world_size = int(state["data"].get("world_size", 1))
        self.step = state["step"]
        self.best_loss = state["best_loss"]
        self.prior = RunTotals(**state["run"])
        self.cfg = replace(self.cfg, vocab=state["vocab"])
        if self.trainable.adapter_path is not None and state["lora_dropout"]:  # the masks' seed
            self.trainable.adapter_path.load_state_dict(state["lora_dropout"])

    def _load_last(self) -> dict[str, Any]:
        """Load ``ckpt_last`` into the weights and moments (checking its run state loads);
        the rest of its state."""
        path = self.out / CKPT_LAST
        if not path.exists():
            raise TrainError(f"--resume: no checkpoint at {path}; start without --resume")
        step = read_metadata(path)["step"]
        if step >= self.cfg.steps:
            raise TrainError(
                f"{path}: already at step {step} of {self.cfg.steps}; raise --steps to train "
                "further (it is the run's total, not steps to add)"
            )
        ckpt = load_checkpoint(path, expect=self.model)
        notes = []
        before = ckpt.extra.get("train", {}).get("steps")
        if isinstance(before, int) and before != self.cfg.steps:
            notes.append(
                f"--steps {self.cfg.steps} differs from the {before} this run started with: the "
                "learning-rate schedule is laid out over the new total from here on"
            )
        asked = self.chosen_vocab
        # a checkpoint from before --vocab existed trained over its data's ids
        vocab = ckpt.extra.get("train", {}).get("vocab", "data")
        if vocab not in VOCABS[1:]:
            raise CheckpointError(f"{path}: unknown vocabulary {vocab!r} in its run state")
        if asked not in ("auto", vocab):
            raise TrainError(
                f"{path}: this run's loss is over the {vocab} vocabulary (--vocab {vocab}); a "
                f"resume keeps it: drop --vocab {asked} or start a new run"
            )
        lora = self.trainable.lora
        lora_ckpt = ckpt.extra.get("lora")
        if (lora is None) != (lora_ckpt is None):
            raise TrainError(
                f"{path}: is a {'full' if lora_ckpt is None else 'LoRA'} training checkpoint; "
                f"resume it as one (this run trains {'every weight' if lora is None else 'LoRA'})"
            )
        if lora is not None and lora_ckpt["config"] != lora.to_dict():
            raise TrainError(
                f"{path}: adapters have LoRA settings {lora_ckpt['config']}, this run "
                f"{lora.to_dict()}; resume with the run's own --lora-* values"
            )
        if lora is not None and lora_ckpt["base"]["id"] != self.trainable.base_id:
            raise TrainError(
                f"{path}: adapters were trained on base {lora_ckpt['base']['id']}, not on this "
                f"one ({self.trainable.base_id}); resume with the original base model"
            )
        self.trainable.values.flat[...] = ckpt.params.flat
        if ckpt.adam_m is None or ckpt.adam_v is None:
            raise TrainError(f"{path}: has no optimizer state, cannot resume training from it")
        self.adam.load_state_dict({"m": ckpt.adam_m.flat, "v": ckpt.adam_v.flat, "t": ckpt.adam_t})
        try:
            self.scaler.load_state_dict(ckpt.scaler)  # type: ignore[arg-type]
            self.sampler.load_state_dict(ckpt.data)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{path}: corrupt run state (loss scaler or data sampler: {err!r}); resume from "
                "another checkpoint or start a new run"
            ) from None
        keys = ("step", "adam_t", "scaler", "data", "best_loss")
        run = ckpt.extra.get("run", {})
        dropout = (lora_ckpt or {}).get("dropout")
        out = {"notes": notes, "run": run, **{k: getattr(ckpt, k) for k in keys}}
        return out | {"lora_dropout": dropout, "vocab": vocab}

    def checkpoint(self) -> Checkpoint:
        values = self.trainable.values
        m, v = values.zeros_like(), values.zeros_like()
        m.flat[...] = self.adam.m
        v.flat[...] = self.adam.v
        extra: dict[str, Any] = {
            "train": asdict(self.cfg),
            "vocab_ids": self.vocab_ids(),
            "run": asdict(self.totals()),
        }
        if isinstance(self.trainable, LoraTrainable):  # the adapters only, and which base
            extra["lora"] = self.trainable.record()
        return Checkpoint(
            config=self.model,
            params=values,
            step=self.step,
            adam_m=m,
            adam_v=v,
            adam_t=self.adam.t,
            scaler=self.scaler.state_dict(),
            data=self.sampler.state_dict(),
            best_loss=self.best_loss,
            extra=extra,
        )

    @property
    def compile_s(self) -> float:
        """This process's compile time (the pipeline's compiles)."""
        return self.pipeline.compile_s

    def totals(self) -> RunTotals:
        """The run's cumulative figures, this process included."""
        p = self.prior
        first = (
            p.first_loss
            if p.first_loss is not None
            else (self.history[0] if self.history else None)
        )
        return RunTotals(
            compile_s=p.compile_s + self.compile_s,
            train_s=p.train_s + self.train_s,
            wall_s=p.wall_s + time.perf_counter() - self._t0,
            kernel_s=p.kernel_s + self.kernel_ms / 1e3,
            steps=p.steps + len(self.history),
            batches=p.batches + self.batches,
            restarts=p.restarts + self.restart_due,
            first_loss=first,
        )

    def _over_budget(self) -> bool:
        """Would the next stage_weights exceed this process's compile budget?"""
        be, need = self.pipeline.backend, self.pipeline.compiles_per_stage
        return bool(need) and be.compile_count + need > be.compile_budget

    def _stage(self) -> float:
        """Re-stage the updated weights; returns the compile seconds it took (the static
        pipeline recompiles). Over budget, it marks the run for a restart instead."""
        last = self.step + 1 >= self.cfg.steps
        if self.pipeline.compiles_per_stage and last:
            return 0.0  # no recompile (nor restart) for weights no step will use
        if self._over_budget():
            self.restart_due = True
            return 0.0
        before = self.pipeline.compile_s
        self.trainable.stage(self.pipeline)
        compiled = self.pipeline.compile_s - before
        self.batches += compiled > 0
        return compiled

    def vocab_ids(self) -> list[int] | None:
        """The token ids the classifier was trained over (None: the whole vocabulary)."""
        ids = self.pipeline.vocab.ids
        return None if ids.size == self.model.vocab_size else ids.tolist()

    def save(self, val_loss: float | None = None) -> None:
        """Write the last checkpoint; copy it to best when ``val_loss`` improves. With several
        ranks: all check they hold the same state first, and rank 0 writes."""
        if val_loss is not None and val_loss < self.best_loss:
            self.best_loss = val_loss
            improved = True
        else:
            improved = False
        self.check_ranks_agree()
        if not self.world.is_writer:
            return
        try:
            path = save_checkpoint(self.out / CKPT_LAST, self.checkpoint())
        except CheckpointError as err:
            raise TrainError(
                f"{err}; the checkpoint already there is intact: fix the cause and continue "
                "with --resume"
            ) from err
        if improved:
            try:
                with path.open("rb") as src, atomic_writer(self.out / CKPT_BEST) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except OSError as err:
                raise CheckpointError(
                    f"{self.out / CKPT_BEST}: cannot write the best checkpoint "
                    f"({err.strerror or err}); {path} is intact: fix the cause and continue "
                    "with --resume"
                ) from err
        if isinstance(self.trainable, LoraTrainable):
            self._write_adapter_folder(improved)

    def _write_adapter_folder(self, improved: bool) -> None:
        """RUN/adapter holds the adapters of the checkpoint generate and export read (the best,
        else the last: runfolder.checkpoint_in), so peft loads the same model; a damaged or
        deleted folder is written again from that checkpoint."""
        assert isinstance(self.trainable, LoraTrainable)
        folder, read = self.out / ADAPTER_DIR, checkpoint_in(self.out)
        if read == self.out / (CKPT_BEST if improved else CKPT_LAST):
            self.trainable.write_peft(folder)
        elif read is not None and not peft_folder_intact(folder):
            self.trainable.write_peft(folder, load_checkpoint(read, expect=self.model).params)

    def check_ranks_agree(self) -> None:
        """Every rank holds the same weights, moments and run state (free on one process)."""
        arrays = {"parameters": self.trainable.values.flat, "Adam m": self.adam.m}
        arrays["Adam v"] = self.adam.v
        train = {k: v for k, v in asdict(self.cfg).items() if k not in ("backend", "chip")}
        state = {"step": self.step, "sampler": self.sampler.state_dict(), "adam_t": self.adam.t}
        state.update(scaler=self.scaler.state_dict(), train=train)
        self.world.check_identical(arrays, state)

    # ---- training -------------------------------------------------------------------------

    def train_step(self, stop: _StopFlag | None = None) -> StepRecord:
        """One optimizer step over ``accum`` windows per rank. ``stop``: this rank's Ctrl-C
        flag; ``self.stopping`` then says whether any rank asked to stop after this step."""
        cfg = self.cfg
        start = time.perf_counter()
        lr = self.schedule(self.step)
        scale = self.scaler.scale
        windows = cfg.accum * self.world.size  # the effective batch
        grad_scale = 1.0 / (windows * scale)
        self.grads.flat[...] = 0.0
        loss = 0.0
        if self.trainable.adapter_path is not None:  # LoRA dropout masks follow the window stream
            self.trainable.adapter_path.window = self.sampler.next_index(cfg.accum)
        mine = self.sampler.next_windows(cfg.accum)
        for i, window in enumerate(mine):
            last = i == len(mine) - 1 and self.trainable.lora is None  # overlap: full only
            hook = self.world.grads_hook(self.grads) if last else None  # type: ignore[arg-type]
            loss += self.pipeline.forward_backward(
                self.params,
                self.trainable.sink,
                window.inputs,
                window.targets,
                scale,
                grad_scale,
                hook,
            )
        self.pipeline.wait()
        if 4 * self.model.n_params > PRESTAGE_MAX_BYTES:
            # a large model: its freed activations and the kernels' transient buffers and
            # output surfaces leave RSS before the Adam moments come in (measured, stories110m's
            # one-step peak: the heap 2.33 -> 2.13 GB, the kernels 2.13 -> 1.97 GB)
            self.pipeline.release_memory()
            release_free_heap()
        asked = float(stop is not None and stop.requested)
        loss, stops = self.world.reduce_step(self.grads.flat, (loss, asked))
        loss /= windows
        self.stopping = stops > 0
        finite = math.isfinite(loss) and all_finite(self.grads.flat)
        norm = global_norm(self.grads.flat) if finite else math.inf
        apply = self.scaler.update(finite)
        compiled = 0.0
        if apply:  # gradient clipping happens inside the AdamW pass
            clip = clip_factor(norm, cfg.clip)
            self.adam.step(self.trainable.values.flat, self.grads.flat, lr, grad_scale=clip)
            if not all_finite(self.trainable.values.flat):
                raise TrainError(
                    f"step {self.step + 1} made the weights non-finite (lr {lr:.3g}); nothing "
                    f"was saved, {self.out / CKPT_LAST} holds the last good checkpoint: lower --lr "
                    "and resume"
                )
            compiled = self._stage()
        self.bad_steps = 0 if finite else self.bad_steps + 1
        elapsed = time.perf_counter() - start - compiled
        phases = self.pipeline.timer.take()
        phases["comm"] = round(self.world.comm_ms, 3)
        self.train_s += elapsed
        self.kernel_ms += phases["kernels"]
        self.comm_ms += self.world.comm_ms
        self.step += 1
        self.last_compile_ms = compiled * 1e3
        tokens = windows * self.model.seq_len
        compiles = self.pipeline.backend.compile_count
        return StepRecord(
            self.step, loss, lr, norm, scale, not apply, elapsed * 1e3, tokens / elapsed, phases,
            compiles, cfg.accum,
        )  # fmt: skip

    def validate(self) -> float:
        """Mean loss over the first ``eval_windows`` validation windows, over the vocabulary
        the training loss uses (see :meth:`val_losses`)."""
        return self.val_losses()[0]

    def val_losses(self) -> tuple[float, float]:
        """(training's vocabulary, full-vocabulary) mean validation loss, by the NumPy
        reference.

        With ``vocab="data"`` training's softmax runs over the token ids the data uses (the
        compacted vocabulary), so its loss is lower than a trainer's over the whole vocabulary
        would be; the second number is over all ``vocab_size`` logits and compares with other
        trainers (with ``vocab="full"`` the two are the same).
        """
        vocab = self.pipeline.vocab  # the same softmax as training
        compact, full = [], []
        params = self.trainable.model_params()
        for w in self.data.sequential_windows(
            "val", self.model.seq_len, max_windows=self.cfg.eval_windows
        ):
            logits, _, _ = reference.forward(params, w.inputs[None])  # [1,S,V]
            logits = logits.astype(np.float64)
            sub = logits[:, :, vocab.ids]  # [1,S,CV]
            compact.append(reference.crossentropy_forward(sub, vocab.compact(w.targets)[None])[0])
            full.append(reference.crossentropy_forward(logits, w.targets[None])[0])
        if not compact:
            return math.nan, math.nan
        return float(np.mean(compact)), float(np.mean(full))

    def log(self, record: dict[str, Any]) -> None:
        if self._metrics is None:  # not the writing rank
            return
        self._metrics.write(json.dumps(finite_or_none(record)) + "\n")
        self._metrics.flush()  # a torn line (disk full, kill) is dropped on resume

    def run(self) -> dict[str, Any]:
        """Train to ``steps``. Ctrl-C stops after the current step, with a checkpoint saved
        (a second Ctrl-C aborts at once)."""
        wall_start = time.perf_counter()
        first_loss = None
        with _stop_on_interrupt() as stop, self._stopping_cleanly():
            self.check_ranks_agree()  # same arguments, data position and initial weights
            while self.step < self.cfg.steps and not self.stopping:
                record = self.train_step(stop)
                if self.bad_steps >= MAX_BAD_STEPS:
                    raise TrainError(
                        f"{self.bad_steps} steps in a row gave non-finite gradients or loss "
                        f"(loss scale {self.scaler.scale:g}): training diverged at step "
                        f"{self.step}; {self.out / CKPT_LAST} holds the last good checkpoint: "
                        "lower --lr (or --loss-scale) and resume"
                    )
                first_loss = record.loss if first_loss is None else first_loss
                self.history.append(record.loss)
                self.log(record.to_json())
                if self.pipeline.compiles_per_stage:
                    r = record
                    batch = (r.step, self.last_compile_ms, r.ms, r.windows, r.compiles)
                    self.log(runfolder.batch_record(*batch))
                if self.on_step is not None:
                    self.on_step(record)
                val = None
                if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps:
                    val, full = (self.world.mean(v) for v in self.val_losses())  # rank-equal
                    self.val_loss_full = full
                    self.log(
                        {"type": "val", "step": self.step, "val_loss": val, "val_loss_full": full}
                    )
                improved = val is not None and val < self.best_loss
                due = self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps
                due = due and self.bad_steps == 0  # in a non-finite streak keep the last good one
                if due or improved or self.stopping or self.restart_due:
                    self.save(val)
                if self.restart_due:
                    compiles = self.pipeline.backend.compile_count
                    self.log({"type": "restart", "step": self.step, "compiles": compiles})
                    break
        summary = self.summary(time.perf_counter() - wall_start, first_loss)
        summary["interrupted"] = self.stopping
        summary["restart"] = self.restart_due and not self.stopping
        return summary

    def modeled_ms_per_window(self) -> float | None:
        """The performance model's ANE time for one window's kernel evals (each kernel once per
        layer) on this run's chip, whatever the backend; None when the chip has no model."""
        chip = self.pipeline.backend.chip
        evals = self.pipeline.window_evals()
        times = [perfmodel.modeled_ns(s.model.program, chip) for s, _ in evals]
        if any(t is None for t in times):
            return None
        return sum(t * n for t, (_, n) in zip(times, evals, strict=True)) / 1e6  # type: ignore[operator]

    def summary(self, wall_s: float, first_loss: float | None) -> dict[str, Any]:
        """The Efficiency Report's figures over the whole run (every process of it); this
        process's ``wall_s`` and ``first_loss`` are superseded by the run's totals."""
        t = self.totals()
        steps = t.steps
        windows = self.cfg.accum * self.world.size
        # kernel FLOPs, TFLOPS and utilization are this rank's (one chip's); tokens/s is global
        flops = self.pipeline.flops_per_window() * self.cfg.accum * steps
        chip = self.pipeline.backend.chip
        tflops = flops / t.kernel_s / 1e12 if t.kernel_s > 0 else math.nan
        # the perf model's rated fp16 peak: M1-M3 TOPS are fp16 figures, M4's INT8; M5 has none
        peak = perfmodel.get_params(chip).rated_fp16_tflops
        modeled = self.modeled_ms_per_window()
        modeled_step = None if modeled is None else modeled * self.cfg.accum
        modeled_tflops = (
            flops / steps / (modeled_step / 1e3) / 1e12 if modeled_step and steps else None
        )
        steps_run = len(self.history)
        return {
            "modeled_ane_ms_per_step": modeled_step,
            "modeled_kernel_tflops": modeled_tflops,
            "modeled_utilization_pct": 100 * modeled_tflops / peak if modeled_tflops else None,
            "steps": self.step,
            "steps_this_run": steps_run,
            "first_loss": t.first_loss,
            "final_loss": self.history[-1] if self.history else None,
            "best_val_loss": None if math.isinf(self.best_loss) else self.best_loss,
            "val_loss_full": self.val_loss_full,
            "skipped_steps": self.scaler.skipped,
            "wall_s": t.wall_s,
            "compile_s": t.compile_s,
            "compile_pct": 100 * t.compile_s / t.wall_s if t.wall_s > 0 else math.nan,
            "train_s": t.train_s,
            "restarts": t.restarts,
            "batches": t.batches,
            "ms_per_step": t.train_s / max(steps, 1) * 1e3,
            "tokens_per_s": steps * windows * self.model.seq_len / max(t.train_s, 1e-9),
            "world_size": self.world.size,
            "windows_per_step": windows,
            "comm_ms_per_step": self.comm_ms / max(steps_run, 1),
            "comm_bytes_per_step": self.world.bytes_per_step(self.grads.flat.size),
            "kernel_s": t.kernel_s,
            "kernel_flops": flops,
            "kernel_tflops": tflops,
            "chip": chip.name,
            "chip_peak_fp16_tflops": peak,
            "utilization_pct": 100 * tflops / peak if peak else math.nan,
            "backend": self.pipeline.backend.name,
            "pipeline": self.cfg.pipeline + (" + ANE extras" if self.cfg.ane_extras else ""),
            "kernels_compiled": len(self.pipeline.kernels),
            "compiles_per_batch": self.pipeline.compiles_per_stage,
            "trainable_params": int(self.trainable.values.flat.size),
            "lora": None if self.trainable.lora is None else self.trainable.lora.to_dict(),
            "vocab": self.cfg.vocab,
            "vocab_ids_trained": int(self.pipeline.vocab.ids.size),
        }

    def vocab_note(self) -> str:
        """Which vocabulary the loss is over, for the startup line and the report."""
        n, total = self.pipeline.vocab.ids.size, self.model.vocab_size
        if self.cfg.vocab == "full":
            return f"full vocab, {total:,} ids"
        return f"data's vocab, {n:,} of {total:,} ids"

    @contextlib.contextmanager
    def _stopping_cleanly(self) -> Iterator[None]:
        """Close the metrics file and kernels however the loop ends; turn a file-system error
        into one line that says the last checkpoint is intact and how to continue."""
        try:
            yield
        except OSError as err:
            raise TrainError(
                f"{err.filename or self.out}: {err.strerror or err} at step {self.step}; the last "
                f"checkpoint {self.out / CKPT_LAST} is intact: fix the cause (free space, "
                "permissions) and continue with --resume"
            ) from err
        finally:
            with contextlib.suppress(OSError):  # a full disk can refuse the final flush too
                if self._metrics is not None:
                    self._metrics.close()
            self.pipeline.close()


def _metrics_upto(path: Path, step: int) -> str:
    """metrics.jsonl's records up to ``step`` (those after the checkpoint are redone); a torn
    or unreadable line (a disk that filled, a kill mid-write) is dropped."""
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    return "".join(kept)


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
