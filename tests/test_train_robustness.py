"""A run never writes non-finite weights, never loses its last checkpoint and can always be
continued: non-finite steps, diverging runs, full disks, torn metrics lines, leftovers of
killed writers, finished runs and changed --steps."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anetrain.cli import main
from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.model import ModelConfig, reference
from anetrain.runfolder import CKPT_BEST as BEST
from anetrain.runfolder import CKPT_LAST as LAST
from anetrain.train import loop
from anetrain.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from anetrain.train.loop import TrainConfig, Trainer, TrainError

MODEL = ModelConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=512, seq_len=32)
TOML = "dim = 32\nn_layers = 1\nn_heads = 2\nhidden_dim = 64\nvocab_size = 512\nseq_len = 32\n"


def cfg(**changes: object) -> TrainConfig:
    base = {"steps": 4, "accum": 1, "eval_every": 2, "ckpt_every": 2, "warmup": 1}
    return TrainConfig(backend="sim", **(base | changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> TokenFile:
    return TokenFile(builtin_dataset(), vocab_size=MODEL.vocab_size)


def finished(out: Path, data: TokenFile, **changes: object) -> Trainer:
    trainer = Trainer(MODEL, data, cfg(**changes), out)
    trainer.run()
    return trainer


def poison(trainer: Trainer, steps: set[int] | None) -> None:
    """Make forward_backward return NaN (loss and gradients) on the given steps (None: all)."""
    real = trainer.pipeline.forward_backward

    def forward_backward(params, grads, *args, **kwargs):  # type: ignore[no-untyped-def]
        loss = real(params, grads, *args, **kwargs)
        if steps is None or trainer.step + 1 in steps:
            trainer.pipeline.wait()
            grads.flat[:5] = np.nan
            return math.nan
        return loss

    trainer.pipeline.forward_backward = forward_backward  # type: ignore[method-assign]


def train_argv(tmp_path: Path, out: Path) -> list[str]:
    """``anetrain train`` of 2 steps of the small model into ``out``; index 6 is the steps."""
    config = tmp_path / "m.toml"
    config.write_text(TOML)
    argv = ["train", "--config", str(config), "--backend", "sim", "--steps", "2", "--accum", "1"]
    return [*argv, "--sample-tokens", "0", "--no-progress", "--out", str(out)]


def test_train_config_refuses_values_that_train_silently_wrong() -> None:
    for bad in ({"lr": math.nan}, {"lr": -1.0}, {"loss_scale": math.inf}, {"eval_every": 0}):
        with pytest.raises(TrainError):
            cfg(**bad)


def test_a_non_finite_step_is_skipped_and_the_scaler_backs_off(
    tmp_path: Path, data: TokenFile
) -> None:
    trainer = Trainer(MODEL, data, cfg(dynamic_loss_scale=True), tmp_path / "run")
    poison(trainer, {2})
    trainer.train_step()
    before = trainer.params.flat.copy()
    record = trainer.train_step()
    assert record.skipped and math.isnan(record.loss)
    assert np.array_equal(trainer.params.flat, before)  # nothing applied
    assert trainer.scaler.scale == 128.0 and trainer.scaler.skipped == 1
    trainer.train_step()
    assert np.isfinite(trainer.params.flat).all() and trainer.bad_steps == 0
    trainer.pipeline.close()


def test_a_run_that_keeps_producing_nan_stops_and_keeps_its_checkpoint(
    tmp_path: Path, data: TokenFile
) -> None:
    out = tmp_path / "run"
    finished(out, data, steps=2)
    before = (out / LAST).read_bytes()
    trainer = Trainer(MODEL, data, cfg(steps=1000), out, resume=True)
    poison(trainer, None)
    with pytest.raises(TrainError, match=rf"{loop.MAX_BAD_STEPS} steps in a row .* last good"):
        trainer.run()
    assert (out / LAST).read_bytes() == before
    assert np.isfinite(load_checkpoint(out / LAST).params.flat).all()


def test_weights_made_non_finite_are_never_saved(tmp_path: Path, data: TokenFile) -> None:
    out = tmp_path / "run"
    finished(out, data, steps=2)
    before = (out / LAST).read_bytes()
    trainer = Trainer(MODEL, data, cfg(steps=6), out, resume=True)
    real_step = trainer.adam.step

    def exploding(params, grads, lr, grad_scale=1.0):  # type: ignore[no-untyped-def]
        real_step(params, grads, lr, grad_scale)
        params[7] = np.inf

    trainer.adam.step = exploding  # type: ignore[method-assign]
    with pytest.raises(TrainError, match="non-finite"):
        trainer.run()
    assert (out / LAST).read_bytes() == before
    ckpt = load_checkpoint(out / LAST)
    ckpt.params.flat[3] = np.nan
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(out / LAST, ckpt)
    assert (out / LAST).read_bytes() == before


def _finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, list[str], dict[str, bytes]]:
    """A 2-step run trained into ``tmp_path/run``: its folder, command line and file bytes."""
    out = tmp_path / "run"
    argv = train_argv(tmp_path, out)
    assert main(argv) == 0
    capsys.readouterr()
    return out, argv, {p.name: p.read_bytes() for p in out.iterdir()}


def test_resuming_a_finished_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, argv, files = _finished_run(tmp_path, capsys)
    assert main([*argv, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "already at step 2 of 2; raise --steps" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert main([*argv[:6], "4", *argv[7:], "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "warning" in printed and "--steps 4 differs from the 2" in printed
    assert load_checkpoint(out / LAST).step == 4


def test_train_help_says_steps_is_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "total optimizer steps" in text and "schedule" in text and "raise it" in text


def test_torn_metrics_line_is_dropped_on_resume(tmp_path: Path, data: TokenFile) -> None:
    out = tmp_path / "run"
    finished(out, data, steps=2)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"type": "step", "step": 3, "lo')  # the disk filled mid-line
    Trainer(MODEL, data, cfg(steps=4), out, resume=True).run()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2, 3, 4]


def test_stale_temp_files_of_ours_are_removed_at_start(tmp_path: Path, data: TokenFile) -> None:
    from anetrain.fsutil import remove_stale_temps

    out = tmp_path / "run"
    finished(out, data, steps=2)
    ours = out / f".{LAST}.{'ab12' * 8}.tmp"
    ours.write_bytes(b"x" * 1000)
    theirs = [out / ".notes.tmp", out / f".{LAST}.tmp", out / "keep.tmp"]
    for path in theirs:
        path.write_text("not ours")
    Trainer(MODEL, data, cfg(steps=3), out, resume=True).run()
    assert not ours.exists() and all(p.exists() for p in theirs)
    assert remove_stale_temps(tmp_path / "missing") == []


def test_full_disk_while_copying_best_keeps_both_checkpoints(
    tmp_path: Path, data: TokenFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    trainer = finished(out, data, steps=2)
    best = (out / BEST).read_bytes()

    def full(src, dst, length=0):  # type: ignore[no-untyped-def]
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(CheckpointError, match=r"best checkpoint .*No space left.*--resume"):
        trainer.save(val_loss=-1.0)
    assert (out / BEST).read_bytes() == best
    assert load_checkpoint(out / LAST).step == 2
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_while_appending_metrics_is_one_line_then_resumable(
    tmp_path: Path, data: TokenFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    finished(out, data, steps=2)
    trainer = Trainer(MODEL, data, cfg(steps=6), out, resume=True)
    real = trainer._metrics

    class FullDisk:
        def write(self, text: str) -> int:
            if '"step": 4' in text:
                real.write(text[:17])  # the torn half that reaches the disk
                real.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return real.write(text)

        def flush(self) -> None:
            real.flush()

        def close(self) -> None:
            real.close()

    trainer._metrics = FullDisk()  # type: ignore[assignment]
    with pytest.raises(TrainError, match=r"No space left on device at step 4; .* --resume"):
        trainer.run()
    assert load_checkpoint(out / LAST).step == 2  # ckpt_every 2: step 4 was never saved
    Trainer(MODEL, data, cfg(steps=6), out, resume=True).run()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2, 3, 4, 5, 6]


def test_corrupt_run_state_in_a_checkpoint_is_a_checkpoint_error(
    tmp_path: Path, data: TokenFile
) -> None:
    out = tmp_path / "run"
    finished(out, data, steps=2)
    ckpt = load_checkpoint(out / LAST)
    ckpt.scaler = {"scale": "large"}
    save_checkpoint(out / LAST, ckpt)
    with pytest.raises(CheckpointError, match="corrupt run state"):
        Trainer(MODEL, data, cfg(steps=4), out, resume=True)


def test_validation_reports_compacted_and_full_vocabulary_loss(
    tmp_path: Path, data: TokenFile
) -> None:
    trainer = finished(tmp_path / "run", data, steps=2)
    compact, full = trainer.val_losses()
    ids = trainer.pipeline.vocab.ids
    assert 0 < ids.size < MODEL.vocab_size  # the built-in corpus uses part of the vocabulary
    want_c, want_f = [], []
    for w in data.sequential_windows("val", MODEL.seq_len, max_windows=trainer.cfg.eval_windows):
        logits = torch.from_numpy(reference.forward(trainer.params, w.inputs[None])[0][0])
        targets = torch.from_numpy(w.targets.astype(np.int64))
        want_f.append(torch.nn.functional.cross_entropy(logits.double(), targets).item())
        remap = torch.from_numpy(trainer.pipeline.vocab.compact(w.targets).astype(np.int64))
        sub = logits.double()[:, torch.from_numpy(ids)]
        want_c.append(torch.nn.functional.cross_entropy(sub, remap).item())
    assert full == pytest.approx(np.mean(want_f), rel=1e-9)
    assert compact == pytest.approx(np.mean(want_c), rel=1e-9)
    assert full > compact
    vals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["type"] == "val"]
    assert vals and all(r["val_loss_full"] > r["val_loss"] for r in vals)


def test_memory_estimate_refuses_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    from anetrain import memory
    from anetrain.mil import parse_program
    from anetrain.runtime import compile as compile_kernel

    big = ModelConfig(dim=8192, n_layers=64, n_heads=64, hidden_dim=22016, vocab_size=128000)
    need = memory.training_bytes(big)
    assert need > 16 * big.n_params  # weights, grads and both moments at the least
    with pytest.raises(memory.MemoryLimitError, match="above --max-memory"):
        memory.check_fits("training", need, 2**30)
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    text = (
        "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 1024, 1, 1024]> x) {\n"
        '        tensor<fp16, [1, 1024, 1, 1024]> y = add(x = x, y = x)[name = string("y")];\n'
        "    } -> (y);\n}\n"
    )
    with pytest.raises(memory.MemoryLimitError, match=r"program 'main' needs about 4\.0 MiB"):
        compile_kernel(parse_program(text), backend="sim")
    assert loop.MAX_BAD_STEPS > 8  # room for the dynamic scaler's 8 halvings from 256 to 1


def test_training_into_a_folder_that_holds_a_run_needs_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, argv, files = _finished_run(tmp_path, capsys)
    assert main([*argv[:6], "3", *argv[7:]]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_generate_refuses_a_checkpoint_with_non_finite_weights(
    tmp_path: Path,
    data: TokenFile,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A diverged run of an older version could save NaN weights; sampling from them is
    refused rather than printing noise."""
    from anetrain.model import checkpoint  # the format lives in model/ (train re-exports it)

    out = tmp_path / "run"
    finished(out, data, steps=2)
    ckpt = load_checkpoint(out / LAST)
    ckpt.params.flat[:] = np.nan
    monkeypatch.setattr(checkpoint, "refuse_non_finite", lambda path, ckpt: None)  # old writer
    save_checkpoint(out / "nan.safetensors", ckpt)
    monkeypatch.undo()
    assert main(["generate", "--ckpt", str(out / "nan.safetensors"), "--tokenizer", "builtin"]) == 1
    assert "NaN or infinity" in capsys.readouterr().err
