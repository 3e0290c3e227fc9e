"""``anetrain generate`` end to end: run folders, checkpoint files, llama2.c and BLZT files,
determinism, greedy decoding against the reference forward, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from anetrain.cli import main
from anetrain.data.corpus import load_tokenizer
from anetrain.data.tokenizer import BOS_ID, EOS_ID, Tokenizer
from anetrain.model import ModelConfig, Params
from anetrain.model.llama2c import export_llama2c
from anetrain.model.loader import detect_format
from anetrain.model.original import MAGIC as BLZT_MAGIC
from anetrain.model.reference import forward
from anetrain.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

MODEL = ModelConfig(
    dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, vocab_size=512, seq_len=64
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder made by ``anetrain train`` (config.json names the built-in tokenizer)."""
    root = tmp_path_factory.mktemp("gen")
    toml = root / "model.toml"
    toml.write_text(MODEL.to_toml())
    out = root / "run"
    argv = ["train", "--config", str(toml), "--backend", "sim", "--steps", "4", "--accum", "1"]
    argv += ["--eval-every", "2", "--ckpt-every", "2", "--sample-tokens", "0", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "ckpt_best.safetensors").is_file() and (out / "ckpt_last.safetensors").is_file()
    return out


def generate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def n_generated(err: str) -> int:
    match = re.search(r"^(\d+) tokens in [\d.]+ s \([\d,.]+ tokens/s, seed \d+\)$", err, re.M)
    assert match, err
    return int(match.group(1))


def greedy(params: Params, prompt: list[int], max_new: int) -> list[int]:
    """Greedy decoding by re-running the full reference forward (no KV cache) each step."""
    ids = list(prompt)
    new: list[int] = []
    while len(new) < max_new and len(ids) < params.config.seq_len:
        logits = forward(params, np.array(ids)[None])[0]  # [1, T, V]
        tok = int(np.argmax(logits[0, -1]))
        new.append(tok)
        ids.append(tok)
        if tok in (BOS_ID, EOS_ID):
            break
    return new


# --- happy paths -----------------------------------------------------------------------------


def test_run_folder_prints_text_and_is_deterministic(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = generate(capsys, "--ckpt", run_dir, "--max-tokens", "10", "--seed", "1")
    assert code == 0
    assert out.strip() and out.endswith("\n")
    assert "ckpt_best.safetensors" in err and "tokenizer builtin" in err
    assert 1 <= n_generated(err) <= 10
    assert generate(capsys, "--ckpt", run_dir, "--max-tokens", "10", "--seed", "1")[1] == out
    assert generate(capsys, "--ckpt", run_dir, "--max-tokens", "10", "--seed", "2")[1] != out


def test_checkpoint_file_uses_its_run_folder_tokenizer(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = generate(
        capsys, "--ckpt", run_dir / "ckpt_last.safetensors", "--seed", "3", "--max-tokens", "5"
    )
    assert code == 0 and out.strip()
    assert "ckpt_last.safetensors" in err and "step 4" in err


def test_top_k_1_is_greedy_reference_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Random weights large enough that greedy decoding does not just repeat one token.
    rng = np.random.default_rng(5)
    params = Params(MODEL, (rng.standard_normal(MODEL.n_params) * 0.3).astype(np.float32))
    params["rms_att"][...] = params["rms_ffn"][...] = params["rms_final"][...] = 1.0
    save_checkpoint(tmp_path / "ckpt_last.safetensors", Checkpoint(MODEL, params))
    (tmp_path / "config.json").write_text(json.dumps({"tokenizer": "builtin"}))

    tok = load_tokenizer("builtin")
    prompt = tok.encode("Once upon a time", bos=True)
    new = greedy(params, prompt, 12)
    assert len(set(new)) > 3  # a non-trivial continuation
    expected = tok.decode(prompt + new) + "\n"
    base = ["--ckpt", tmp_path, "--prompt", "Once upon a time", "--max-tokens", "12"]
    code, out, _ = generate(capsys, *base, "--top-k", "1", "--temperature", "1.5", "--seed", "7")
    assert code == 0
    assert out == expected
    assert generate(capsys, *base, "--temperature", "0", "--seed", "8")[1] == expected


def test_llama2c_export_generates_the_same_text(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = load_checkpoint(run_dir / "ckpt_best.safetensors")
    params = ckpt.params
    args = ["--max-tokens", "15", "--seed", "11", "--prompt", "The cat"]
    # llama2.c files carry no record of the compacted training vocabulary, so compare with a
    # checkpoint of the same weights without one
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(plain, Checkpoint(ckpt.config, params))
    code, want, _ = generate(capsys, "--ckpt", plain, "--tokenizer", "builtin", *args)
    assert code == 0
    for version in (0, 1):
        path = tmp_path / f"model_v{version}.bin"
        export_llama2c(path, params, version=version)
        assert detect_format(path) == "llama2c"
        code, out, err = generate(capsys, "--ckpt", path, "--tokenizer", "builtin", *args)
        assert code == 0 and "llama2.c model" in err
        assert out == want


def test_blzt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = MODEL.replace(residual_scaling=True)
    rng = np.random.default_rng(0)
    params = Params(cfg, (rng.standard_normal(cfg.n_params) * 0.1).astype(np.float32))
    path = tmp_path / "ane.ckpt"
    write_blzt_v4(path, params)
    assert detect_format(path) == "original"
    code, out, err = generate(
        capsys, "--ckpt", path, "--tokenizer", "builtin", "--max-tokens", "8", "--seed", "1"
    )
    assert code == 0 and out.strip()
    assert "maderix BLZT checkpoint, step 300" in err and "note: GQA checkpoint" in err


def test_detect_format_by_magic_not_extension(run_dir: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "weights.bin"
    shutil.copyfile(run_dir / "ckpt_last.safetensors", renamed)
    assert detect_format(renamed) == "anetrain"
    assert load_checkpoint(renamed).step == 4


# --- errors ----------------------------------------------------------------------------------


def expect_error(capsys: pytest.CaptureFixture[str], message: str, *args: str | Path) -> str:
    code, out, err = generate(capsys, *args)
    assert code == 1, (out, err)
    assert err.startswith("anetrain: error: ") and err.count("\n") == 1, err  # one line
    assert message in err, err
    return err


def test_missing_and_corrupt_checkpoints(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect_error(capsys, "no such checkpoint file or run folder", "--ckpt", tmp_path / "nope")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    expect_error(capsys, "no ckpt_best.safetensors or ckpt_last.safetensors", "--ckpt", empty)

    raw = (run_dir / "ckpt_last.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    flipped = bytearray(raw)
    flipped[-3] ^= 0x40
    bad.write_bytes(bytes(flipped))
    expect_error(capsys, "CRC-32", "--ckpt", bad, "--tokenizer", "builtin")
    bad.write_bytes(raw[: len(raw) // 2])
    expect_error(capsys, "truncated", "--ckpt", bad, "--tokenizer", "builtin")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(1).bytes(1000))
    expect_error(
        capsys, "not a model file anetrain can read", "--ckpt", junk, "--tokenizer", "builtin"
    )


def test_tokenizer_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = load_checkpoint(run_dir / "ckpt_last.safetensors")
    lone = save_checkpoint(tmp_path / "lone.safetensors", Checkpoint(ckpt.config, ckpt.params))
    expect_error(capsys, "no tokenizer", "--ckpt", lone)  # no config.json beside it
    model_bin = tmp_path / "model.bin"
    export_llama2c(model_bin, ckpt.params)
    expect_error(capsys, "pass --tokenizer", "--ckpt", model_bin)
    missing = tmp_path / "missing_tok.bin"
    expect_error(capsys, "no such tokenizer file", "--ckpt", lone, "--tokenizer", missing)

    tok = load_tokenizer("builtin")
    small = tmp_path / "small_tok.bin"
    Tokenizer(tok.pieces[:300], tok.scores[:300]).save(small)
    message = "tokenizer has 300 tokens but the model emits ids up to 511"
    expect_error(capsys, message, "--ckpt", lone, "--tokenizer", small)


def test_prompt_and_argument_errors(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_prompt = "Once upon a time there was a little dog. " * 20
    err = expect_error(capsys, "seq_len is 64", "--ckpt", run_dir, "--prompt", long_prompt)
    assert "shorten it" in err
    for flag, value, message in (
        ("--top-p", "1.5", "--top-p must be in (0, 1]"),
        ("--top-k", "0", "--top-k must be at least 1"),
        ("--temperature", "-1", "--temperature must be >= 0"),
        ("--max-tokens", "0", "--max-tokens must be at least 1"),
    ):
        expect_error(capsys, message, "--ckpt", run_dir, flag, value)


# --- helpers ---------------------------------------------------------------------------------


def write_blzt_v4(path: Path, params: Params, step: int = 300) -> None:
    """A maderix v4 (dynamic pipeline) checkpoint: 96-byte header, weights with zero moments."""
    c = params.config
    header = struct.pack(
        "<10i2f3d3i3i",
        *(BLZT_MAGIC, 4, step, 1000, c.n_layers, c.vocab_size, c.dim, c.hidden_dim, c.n_heads),
        c.seq_len,
        *(3e-4, 4.0, 0.0, 1.0, 2.0, step, 0, step),
        *(c.n_kv_heads, c.head_dim, c.qd),
    )
    order = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "rms_att", "rms_ffn")
    parts = [header]
    for i in range(c.n_layers):
        parts += [params[n][i].astype("<f4").tobytes() for n in order]
        parts += [np.zeros(2 * params[n][i].size, "<f4").tobytes() for n in order]  # m, v
    for n in ("rms_final", "embed"):
        parts += [params[n].astype("<f4").tobytes(), np.zeros(2 * params[n].size, "<f4").tobytes()]
    path.write_bytes(b"".join(parts))


def test_run_folder_config_json_tokenizer(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(run_dir / "ckpt_last.safetensors", run / "ckpt_last.safetensors")
    (run / "config.json").write_text(json.dumps({"tokenizer": None}))
    expect_error(capsys, "no tokenizer", "--ckpt", run)
    # a relative tokenizer path is also looked up in the run folder
    load_tokenizer("builtin").save(run / "tok.bin")
    (run / "config.json").write_text(json.dumps({"tokenizer": "tok.bin"}))
    assert generate(capsys, "--ckpt", run, "--max-tokens", "3", "--seed", "0")[0] == 0
    (run / "config.json").write_text("{not json")
    expect_error(capsys, "unreadable run config", "--ckpt", run)
    assert generate(capsys, "--ckpt", run, "--tokenizer", "builtin", "--max-tokens", "3")[0] == 0


def test_sampling_keeps_to_the_trained_vocabulary(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run on the built-in corpus trains over the ids the corpus uses; sampling from its
    checkpoint never emits another id (which would decode to stray bytes)."""
    ids = load_checkpoint(run_dir / "ckpt_best.safetensors").extra["vocab_ids"]
    assert ids is not None and 0 < len(ids) < MODEL.vocab_size
    code, out, _ = generate(
        capsys, "--ckpt", run_dir, "--max-tokens", "40", "--seed", "5", "--temperature", "1.5"
    )
    assert code == 0 and "\ufffd" not in out
