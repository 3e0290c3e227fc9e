"""Safetensors checkpoints: round trip, corruption, architecture checks, atomic writes, and
bit-identical training resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.model import ModelConfig, Params, init_params
from anetrain.runfolder import CKPT_BEST as BEST
from anetrain.runfolder import CKPT_LAST as LAST
from anetrain.train.checkpoint import (
    MAGIC,
    META_KEY,
    VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from anetrain.train.loop import TrainConfig, Trainer, TrainError

CFG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, vocab_size=40)
TRAIN_MODEL = ModelConfig(
    dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=512, seq_len=32
)
TRAIN_CFG = TrainConfig(steps=6, accum=2, eval_every=3, ckpt_every=3, backend="sim", warmup=2)


def random_params(cfg: ModelConfig, seed: int) -> Params:
    return Params(cfg, np.random.default_rng(seed).normal(size=cfg.n_params).astype(np.float32))


def make_ckpt(cfg: ModelConfig = CFG, step: int = 7) -> Checkpoint:
    return Checkpoint(
        config=cfg,
        params=random_params(cfg, 1),
        step=step,
        adam_m=random_params(cfg, 2),
        adam_v=Params(cfg, np.abs(random_params(cfg, 3).flat)),
        adam_t=step,
        scaler={"scale": 128.0, "dynamic": True, "good_steps": 3, "skipped": 1},
        rng={"seed": 5},
        data={"seed": 42, "windows_drawn": 14, "state": [1, 2, 3]},
        best_loss=3.25,
        extra={"note": "test", "nested": {"a": [1, 2]}},
    )


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, Checkpoint]:
    ckpt = make_ckpt()
    return save_checkpoint(tmp_path / "c.safetensors", ckpt), ckpt


def data_offset(path: Path) -> int:
    """Byte offset of the first tensor byte (after the u64 size and the JSON header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_every_tensor_and_field(saved: tuple[Path, Checkpoint]) -> None:
    path, ckpt = saved
    got = load_checkpoint(path, expect=CFG)
    assert got.config == CFG
    for name in ("params", "adam_m", "adam_v"):
        want, have = getattr(ckpt, name), getattr(got, name)
        assert have is not None and set(have.tensors) == set(want.tensors)
        for t in want.tensors:
            np.testing.assert_array_equal(have[t], want[t], err_msg=f"{name}/{t}")
            assert have[t].dtype == np.float32
        assert np.array_equal(have.flat, want.flat)
    for name in ("step", "adam_t", "scaler", "rng", "data", "best_loss", "extra"):
        assert getattr(got, name) == getattr(ckpt, name), name


def test_metadata_and_tensor_names(saved: tuple[Path, Checkpoint]) -> None:
    from safetensors.numpy import load_file

    path, ckpt = saved
    meta = read_metadata(path)
    assert meta["magic"] == MAGIC and meta["version"] == VERSION
    assert meta["config"] == CFG.to_dict() and meta["arch_hash"] == CFG.arch_hash()
    assert meta["step"] == 7 and meta["best_loss"] == 3.25
    # any safetensors reader sees the plain tensor names
    names = set(load_file(str(path)))
    expected = {f"{g}/{n}" for g in ("param", "adam_m", "adam_v") for n in ckpt.params.tensors}
    assert names == expected


def test_params_only_and_infinite_best_loss(tmp_path: Path) -> None:
    params = init_params(CFG, 3)
    path = save_checkpoint(tmp_path / "p.safetensors", Checkpoint(CFG, params))
    got = load_checkpoint(path)
    assert got.adam_m is None and got.adam_v is None and math.isinf(got.best_loss)
    assert read_metadata(path)["best_loss"] is None  # JSON has no inf
    assert np.array_equal(got.params.flat, params.flat)


def test_seq_len_is_not_architecture(saved: tuple[Path, Checkpoint]) -> None:
    path, _ = saved
    got = load_checkpoint(path, expect=CFG.replace(seq_len=CFG.seq_len * 2))
    assert got.config.seq_len == CFG.seq_len


# --- damage ----------------------------------------------------------------------------------


def test_truncated_file(saved: tuple[Path, Checkpoint]) -> None:
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(raw[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(raw[:200])  # cut inside the JSON header
    with pytest.raises(CheckpointError, match="header"):
        load_checkpoint(path)


def test_corrupted_tensor_byte_fails_crc(saved: tuple[Path, Checkpoint]) -> None:
    path, _ = saved
    raw = bytearray(path.read_bytes())
    off = data_offset(path)
    for pos in (off, off + (len(raw) - off) // 2, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match=r"CRC-32 \(corrupt file\)"):
            load_checkpoint(path)


def test_garbage_header(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes((40).to_bytes(8, "little") + b"\x00not json at all, just garbage\xff" * 4)
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_checkpoint(path)
    path.write_bytes(os.urandom(4096))  # header size field absurd
    with pytest.raises(CheckpointError, match="corrupt safetensors header size"):
        load_checkpoint(path)


def test_not_ours_wrong_magic_and_version(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(CheckpointError, match="not an anetrain checkpoint"):
        load_checkpoint(path)
    for field, value, message in (("magic", "other", "wrong magic"), ("version", 99, "version")):
        meta = {"magic": MAGIC, "version": VERSION, field: value}
        save_file({"w": np.zeros(3, np.float32)}, str(path), {META_KEY: json.dumps(meta)})
        with pytest.raises(CheckpointError, match=message):
            read_metadata(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_damaged_metadata_key_is_checkpoint_error(saved: tuple[Path, Checkpoint]) -> None:
    path, _ = saved
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'\\"crc32\\"', b'\\"crc33\\"', 1))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


# --- architecture ----------------------------------------------------------------------------


def test_other_architecture_names_differing_fields(saved: tuple[Path, Checkpoint]) -> None:
    path, _ = saved
    other = CFG.replace(dim=128, n_layers=3)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expect=other)
    msg = str(info.value)
    assert "dim: 64 -> 128" in msg and "n_layers: 2 -> 3" in msg
    assert "another architecture" in msg and "hidden_dim" not in msg


# --- atomic writes ---------------------------------------------------------------------------


def test_failed_write_keeps_previous_checkpoint(
    saved: tuple[Path, Checkpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ckpt = saved
    before = path.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    newer = make_ckpt(step=99)
    newer.params.flat[...] = 0.0
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint \(No space left"):
        save_checkpoint(path, newer)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    got = load_checkpoint(path)
    assert got.step == ckpt.step and np.array_equal(got.params.flat, ckpt.params.flat)


# --- training resume -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_file() -> TokenFile:
    return TokenFile(builtin_dataset(), vocab_size=TRAIN_MODEL.vocab_size)


def step_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "step"]


def test_resume_is_bit_identical(tmp_path: Path, token_file: TokenFile) -> None:
    straight = Trainer(TRAIN_MODEL, token_file, TRAIN_CFG, tmp_path / "straight")
    straight.run()

    # Same TrainConfig (steps=6, so the cosine schedule spans 6 steps), stopped after 3 steps
    # exactly as run() would have: log each step, validate and checkpoint at step 3.
    split_dir = tmp_path / "split"
    first = Trainer(TRAIN_MODEL, token_file, TRAIN_CFG, split_dir)
    for _ in range(3):
        first.log(first.train_step().to_json())
    first.save(first.validate())
    first._metrics.close()
    first.pipeline.close()
    resumed = Trainer(TRAIN_MODEL, token_file, TRAIN_CFG, split_dir, resume=True)
    assert resumed.step == 3
    resumed.run()

    a, b = step_losses(tmp_path / "straight"), step_losses(split_dir)
    assert len(a) == len(b) == 6
    assert a == b  # bit-identical floats, not approximately equal
    assert np.array_equal(straight.params.flat, resumed.params.flat)
    assert np.array_equal(straight.adam.m, resumed.adam.m)
    assert np.array_equal(straight.adam.v, resumed.adam.v)
    assert straight.adam.t == resumed.adam.t == 6
    assert straight.sampler.state_dict() == resumed.sampler.state_dict()
    assert straight.best_loss == resumed.best_loss
    for name in (LAST, BEST):
        x = load_checkpoint(tmp_path / "straight" / name)
        y = load_checkpoint(split_dir / name)
        assert x.step == y.step and np.array_equal(x.params.flat, y.params.flat), name


def test_resume_without_checkpoint_is_train_error(tmp_path: Path, token_file: TokenFile) -> None:
    with pytest.raises(TrainError, match=r"no checkpoint at .*ckpt_last\.safetensors"):
        Trainer(TRAIN_MODEL, token_file, TRAIN_CFG, tmp_path / "empty", resume=True)


def test_resume_other_architecture_is_refused(tmp_path: Path, token_file: TokenFile) -> None:
    t = Trainer(TRAIN_MODEL, token_file, TRAIN_CFG, tmp_path)
    t.save()
    t._metrics.close()
    t.pipeline.close()
    with pytest.raises(CheckpointError, match="dim: 32 -> 64"):
        Trainer(TRAIN_MODEL.replace(dim=64), token_file, TRAIN_CFG, tmp_path, resume=True)


def test_cli_resume_without_checkpoint_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anetrain.cli import main

    toml = tmp_path / "m.toml"
    toml.write_text(TRAIN_MODEL.to_toml())
    out = tmp_path / "run"
    argv = ["train", "--config", str(toml), "--backend", "sim", "--steps", "2", "--resume"]
    assert main(argv) == 1
    assert "--resume needs --out" in capsys.readouterr().err
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anetrain: error: --resume: no checkpoint at") and err.count("\n") == 1
