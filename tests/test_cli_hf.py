"""A Hugging Face folder through the whole CLI: generate, data prepare, train --init, export hf,
and the exported folder back in transformers; bad input gets one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anetrain.cli import main
from anetrain.model.loader import load_model
from anetrain.model.reference import forward
from hf_models import TEXT, build_tokenizer, hf_logits, save_folder, torch, transformers

TOKENS = np.array([3, 17, 42, 99, 7, 120, 5, 64])


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, message: str, *args: str | Path) -> None:
    code, _, err = run(capsys, *args)
    assert code == 1 and err.startswith("anetrain: error: ") and err.count("\n") == 1, err
    assert message in err, err


def _greedy_text(model, tok, ids: list[int], n: int, eos: int) -> str:
    """transformers' greedy continuation of ``ids`` as text; a random model emits stray bytes,
    so it is decoded as the library streams it, token by token."""
    from tokenizers.decoders import DecodeStream

    with torch.no_grad():
        ref = model.generate(
            torch.as_tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=eos,
        )[0].tolist()  # fmt: skip
    stream = DecodeStream(skip_special_tokens=True)
    return "".join(stream.step(tok, i) or "" for i in ref)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_folder_in_train_export_out(kind: str, tmp_path: Path, capsys) -> None:
    folder, model, tok = save_folder(tmp_path / "hf", kind)
    # generate: greedy through the CLI is transformers' greedy continuation
    prompt = "Once upon a time"
    code, out, err = run(
        capsys, "generate", "--ckpt", folder, "--prompt", prompt, "--temperature", "0",
        "--max-tokens", "8",
    )  # fmt: skip
    assert code == 0, err
    assert "Hugging Face model folder" in err
    ids = tok.encode(prompt).ids
    eos = tok.token_to_id("</s>" if kind == "llama" else "<|endoftext|>")
    assert out == _greedy_text(model, tok, ids, 8, eos) + "\n"
    # data prepare with the folder's tokenizer, then train from the folder's weights
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(TEXT * 10) + "\n")
    data = tmp_path / "t.bin"
    assert run(capsys, "data", "prepare", text, "--tokenizer", folder, "--out", data)[0] == 0
    runs = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--init", folder, "--data", data, "--steps", "2", "--accum", "1",
        "--warmup", "0", "--lr", "1e-3", "--backend", "sim", "--sample-tokens", "4",
        "--eval-every", "1", "--no-progress", "--out", runs,
    )  # fmt: skip
    assert code == 0, err
    cfg = json.loads((runs / "config.json").read_text())
    assert cfg["init"]["format"] == "hf" and cfg["tokenizer"] == str(folder / "tokenizer.json")
    trained = load_model(runs)
    assert trained.kind == "anetrain" and trained.config.qk_norm == (kind == "qwen3")
    start = load_model(folder).params
    assert not np.array_equal(trained.params.flat, start.flat)  # it trained from there
    assert np.abs(trained.params.flat - start.flat).max() < 0.05  # ...not from scratch
    # export hf RUN --out OUT, which transformers loads with our logits
    out_dir = tmp_path / "out"
    assert run(capsys, "export", "hf", runs, "--out", out_dir)[0] == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(out_dir).float().eval()
    assert again.config.max_position_embeddings == model.config.max_position_embeddings
    ours, _, _ = forward(trained.params, TOKENS[None], dtype=np.float64)
    np.testing.assert_allclose(
        hf_logits(again, TOKENS), ours[0], rtol=0, atol=1e-5 * np.abs(ours).max()
    )
    assert (out_dir / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()


def test_bad_input_gets_one_line(tmp_path: Path, capsys) -> None:
    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    one_line_error(capsys, "hub id", "generate", "--ckpt", "Qwen/Qwen3-0.6B")
    one_line_error(capsys, "hub id", "train", "--init", "Qwen/Qwen3-0.6B")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").unlink()
    one_line_error(capsys, "missing model.safetensors", "generate", "--ckpt", broken)
    cfg = json.loads((folder / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu"}))
    one_line_error(capsys, 'unsupported hidden_act = "gelu"', "export", "hf", broken, "--out", "x")
    big = build_tokenizer("qwen3", vocab=400)  # more ids than the model's 320 rows
    big.save(str(tmp_path / "big.json"))
    message = f"tokenizer has {big.get_vocab_size()} tokens but the model's vocab_size is 320"
    one_line_error(
        capsys, message, "generate", "--ckpt", folder, "--tokenizer", tmp_path / "big.json"
    )
    one_line_error(capsys, "not empty", "export", "hf", folder, "--out", folder)


def test_init_reads_every_format_through_the_one_loader(tmp_path: Path, capsys) -> None:
    """train --init takes llama2.c files and our own runs too (the loader is shared)."""
    from anetrain.model import ModelConfig, init_params
    from anetrain.model.llama2c import export_llama2c

    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=64, vocab_size=512, seq_len=32)
    start = init_params(cfg, seed=9)
    export_llama2c(tmp_path / "m.bin", start)
    common = ["--steps", "1", "--accum", "1", "--sample-tokens", "0", "--no-progress"]
    run1 = tmp_path / "r1"
    code, _, err = run(capsys, "train", "--init", tmp_path / "m.bin", *common, "--out", run1)
    assert code == 0, err
    first = load_model(run1)
    assert first.config.arch_hash() == cfg.arch_hash()
    assert 0 < np.abs(first.params.flat - start.flat).max() < 0.05
    run2 = tmp_path / "r2"
    assert run(capsys, "train", "--init", run1, *common, "--out", run2)[0] == 0
    assert json.loads((run2 / "config.json").read_text())["init"]["format"] == "anetrain"
    one_line_error(capsys, "drop --model", "train", "--init", run1, "--model", "tiny")
    # the same command plus --resume continues run2; another --init is not its model
    more = ["--steps", "2", *common[2:], "--out", run2, "--resume"]
    assert run(capsys, "train", "--init", run1, *more)[0] == 0
    assert load_model(run2).step == 2
    one_line_error(capsys, "started from", "train", "--init", tmp_path / "m.bin", *more)


def _safetensors(path: Path, header: object, data: bytes = b"\0" * 64) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize(
    "header",
    [
        [1, 2, 3],  # not an object
        {"model.norm.weight": "F32"},  # entry not an object
        {"model.norm.weight": {"dtype": "F32", "shape": [2]}},  # no data_offsets
        {"model.norm.weight": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},
        {"model.norm.weight": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}},
        {"model.norm.weight": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}},
    ],
    ids=["list", "entry-str", "no-offsets", "negative", "shape-str", "reversed"],
)
def test_corrupt_safetensors_header_gets_one_line(tmp_path: Path, capsys, header) -> None:
    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    _safetensors(folder / "model.safetensors", header)
    one_line_error(capsys, "corrupt safetensors header", "generate", "--ckpt", folder)


def test_broken_config_json_is_named_not_taken_for_a_run_folder(tmp_path: Path, capsys) -> None:
    """A folder with Hugging Face weights but a broken or missing config.json: the error names
    config.json, not a run folder's missing checkpoints."""
    folder, _, _ = save_folder(tmp_path / "hf", "llama")
    (folder / "config.json").write_text("{not json")
    one_line_error(capsys, "config.json: unreadable JSON", "generate", "--ckpt", folder)
    (folder / "config.json").write_text("[1, 2]")
    one_line_error(capsys, "config.json: expected a JSON object", "train", "--init", folder)
    (folder / "config.json").unlink()
    one_line_error(capsys, "missing config.json", "export", "hf", folder, "--out", tmp_path / "o")


def test_tokenizer_hub_id_is_refused_as_such(tmp_path: Path, capsys) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello\n")
    args = ("--tokenizer", "Qwen/Qwen3-0.6B")
    one_line_error(capsys, "hub id", "data", "prepare", text, *args, "--out", tmp_path / "t.bin")
    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    one_line_error(capsys, "hub id", "generate", "--ckpt", folder, *args)


def test_init_from_a_folder_needs_data_in_its_own_tokens(tmp_path: Path, capsys) -> None:
    """Without --data, training would run on the built-in corpus, whose ids are the built-in
    tokenizer's, not the model's tokenizer.json's: refused, naming the fix."""
    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    runs = tmp_path / "run"
    one_line_error(capsys, "--data t.bin", "train", "--init", folder, "--steps", "1", "--out", runs)
    assert not runs.exists()


def test_generate_uses_the_folders_context_beyond_the_training_window(
    tmp_path: Path, capsys
) -> None:
    """Imported for training with 256-token windows, a folder with a 512-token context still
    generates past 256 tokens, greedily as transformers does."""
    folder, model, tok = save_folder(tmp_path / "hf", "llama", max_position_embeddings=512)
    assert load_model(folder).config.seq_len == 256
    prompt = "Once upon a time"
    code, out, err = run(
        capsys, "generate", "--ckpt", folder, "--prompt", prompt, "--temperature", "0",
        "--max-tokens", "300",
    )  # fmt: skip
    assert code == 0, err
    assert "300 tokens in" in err
    ids, eos = tok.encode(prompt).ids, tok.token_to_id("</s>")
    assert out == _greedy_text(model, tok, ids, 300, eos) + "\n"


def _fine_tune(capsys, folder: Path, data: Path, out: Path, steps: str, *extra: str) -> str:
    """``train --init folder`` on sim for ``steps``; its stdout."""
    code, printed, err = run(
        capsys, "train", "--init", folder, "--data", data, "--steps", steps, "--accum", "1",
        "--warmup", "0", "--lr", "1e-3", "--backend", "sim", "--sample-tokens", "0",
        "--eval-every", "2", "--ckpt-every", "2", "--no-progress", "--out", out, *extra,
    )  # fmt: skip
    assert code == 0, err
    return printed


def _hf_data(tmp_path: Path, capsys, folder: Path) -> Path:
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(TEXT * 10) + "\n")
    data = tmp_path / "t.bin"
    assert run(capsys, "data", "prepare", text, "--tokenizer", folder, "--out", data)[0] == 0
    return data


def _losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_the_same_fine_tuning_command_with_resume_continues_it(tmp_path: Path, capsys) -> None:
    """``train --init DIR ...`` then the same command plus ``--resume`` (was refused: "--init
    starts a new run"), or ``--resume`` without ``--init`` (was the default tiny model's
    architecture): both continue from the step-2 checkpoint, with the architecture and the
    tokenizer from the run folder, and agree bit for bit."""
    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    data = _hf_data(tmp_path, capsys, folder)
    for out in (tmp_path / "with-init", tmp_path / "without"):
        _fine_tune(capsys, folder, data, out, "2")
    printed = _fine_tune(capsys, folder, data, tmp_path / "with-init", "6", "--resume")
    assert "[RESUMED step 2," in printed
    code, out, err = run(
        capsys, "train", "--data", data, "--steps", "6", "--accum", "1", "--warmup", "0",
        "--lr", "1e-3", "--backend", "sim", "--sample-tokens", "0", "--eval-every", "2",
        "--ckpt-every", "2", "--no-progress", "--out", tmp_path / "without", "--resume",
    )  # fmt: skip
    assert code == 0, err
    assert "[RESUMED step 2," in out and "(0.08M params" in out
    losses = _losses(tmp_path / "with-init")
    assert len(losses) == 6 and losses == _losses(tmp_path / "without")
    a, b = load_model(tmp_path / "with-init"), load_model(tmp_path / "without")
    assert a.step == b.step == 6 and np.array_equal(a.params.flat, b.params.flat)
    for run_dir in (tmp_path / "with-init", tmp_path / "without"):
        cfg = json.loads((run_dir / "config.json").read_text())
        assert cfg["init"]["format"] == "hf"
        assert cfg["tokenizer"] == str(folder / "tokenizer.json")
    split = tmp_path / "with-init"
    # another model under --init is not the run's: refused, nothing changed
    other, _, _ = save_folder(tmp_path / "other", "llama")
    before = (split / "ckpt_last.safetensors").read_bytes()
    one_line_error(
        capsys, "continues the run that started from", "train", "--init", other, "--data",
        data, "--steps", "8", "--out", split, "--resume",
    )  # fmt: skip
    assert (split / "ckpt_last.safetensors").read_bytes() == before


def test_the_static_pipeline_restarts_a_fine_tuning_run_on_its_own_architecture(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A static run re-executes itself with ``--resume`` (and without ``--init``) when the
    compile budget runs out: the new process must rebuild the run's model, not the default
    tiny one (it failed with "checkpoint is for another architecture")."""
    from anetrain.commands import train as train_cmd

    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    data = _hf_data(tmp_path, capsys, folder)
    restarts: list[list[str]] = []
    monkeypatch.setattr(train_cmd, "reexec", restarts.append)
    out = tmp_path / "run"
    _fine_tune(capsys, folder, data, out, "6", "--pipeline", "static", "--compile-budget", "40")
    assert len(restarts) == 1 and "--init" not in restarts[0]
    capsys.readouterr()
    assert main(restarts[0]) == 0, capsys.readouterr().err  # what the exec'd process runs
    assert load_model(out).step > 2 and load_model(out).config.qk_norm


def test_the_same_lora_command_with_resume_continues_it(tmp_path: Path, capsys) -> None:
    folder, _, _ = save_folder(tmp_path / "hf", "qwen3")
    data = _hf_data(tmp_path, capsys, folder)
    a, b = tmp_path / "with-init", tmp_path / "without"
    for out in (a, b):
        _fine_tune(capsys, folder, data, out, "2", "--lora-rank", "4")
    assert "[RESUMED step 2," in _fine_tune(
        capsys, folder, data, a, "4", "--lora-rank", "4", "--resume"
    )
    code, _, err = run(
        capsys, "train", "--data", data, "--steps", "4", "--accum", "1", "--warmup", "0",
        "--lr", "1e-3", "--backend", "sim", "--sample-tokens", "0", "--eval-every", "2",
        "--ckpt-every", "2", "--no-progress", "--out", b, "--resume",
    )  # fmt: skip
    assert code == 0, err
    assert len(_losses(a)) == 4 and _losses(a) == _losses(b)
    assert (a / "adapter" / "adapter_model.safetensors").read_bytes() == (
        b / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
