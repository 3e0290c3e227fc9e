"""LoRA through the CLI on a tiny random Qwen3 folder: train --init --lora-rank, the PEFT files
peft loads, export hf (--merge and not), generate, resume; bad input gets one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anetrain.cli import main
from anetrain.model.checkpoint import read_metadata
from hf_models import TEXT, hf_logits, save_fp16_folder, torch, transformers
from test_cli_hf import _greedy_text, one_line_error, run

peft = pytest.importorskip("peft")
TOKENS = np.array([3, 17, 42, 99, 7, 120, 5, 64, 11, 2])
TRAIN = ("--accum", "1", "--warmup", "0", "--lr", "1e-2", "--backend", "sim", "--no-progress")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(qwen3 folder, token file prepared with its tokenizer)."""
    root = tmp_path_factory.mktemp("lora")
    folder, _, _ = save_fp16_folder(root / "hf", "qwen3")
    text = root / "text.txt"
    text.write_text("\n\n".join(TEXT * 10) + "\n")
    assert main(["data", "prepare", str(text), "--tokenizer", str(folder), "--out",
                 str(root / "t.bin")]) == 0  # fmt: skip
    return folder, root / "t.bin"


def _losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["type"] == "step"]


def _peft_logits(folder: Path, adapter: Path) -> np.ndarray:
    m = transformers.AutoModelForCausalLM.from_pretrained(folder).float().eval()
    return hf_logits(peft.PeftModel.from_pretrained(m, adapter).eval(), TOKENS)


def test_lora_run_peft_files_and_merged_export(base, tmp_path: Path, capsys) -> None:
    folder, data = base
    runs = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--init", folder, "--data", data, "--lora-rank", "4", "--steps", "12",
        "--eval-every", "6", "--sample-tokens", "4", "--out", runs, *TRAIN,
    )  # fmt: skip
    assert code == 0, err
    assert "LoRA rank 4, alpha 4" in out and "Efficiency Report" in out
    report = out[out.index("Efficiency Report") :]
    assert "rank 4, alpha 4 on q,k,v,o,gate,up,down" in report and "trainable parameters" in report
    code, frame, err = run(capsys, "dashboard", runs, "--once")
    assert code == 0 and "LoRA r4 alpha 4.0 on q,k,v,o,gate,up,down" in frame, err
    assert "finished" in frame
    losses = _losses(runs)
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3  # it learns
    # the checkpoint holds adapters and optimizer state only, and names its base
    meta = read_metadata(runs / "ckpt_last.safetensors")
    assert meta["extra"]["lora"]["base"]["path"] == str(folder.resolve())
    from safetensors import safe_open

    with safe_open(runs / "ckpt_last.safetensors", "np") as f:
        keys = set(f.keys())
    assert keys and all(k.split("/")[1].endswith((".A", ".B")) for k in keys)
    assert {k.split("/")[0] for k in keys} == {"param", "adam_m", "adam_v"}
    # peft loads the run's adapter folder onto the same base; the merged export agrees
    adapter = runs / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    ref = _peft_logits(folder, adapter)
    base_logits = hf_logits(transformers.AutoModelForCausalLM.from_pretrained(folder), TOKENS)
    assert np.abs(ref - base_logits).max() > 1e-2  # the adapters changed the model
    merged = tmp_path / "merged"
    code, out, err = run(capsys, "export", "hf", runs, "--out", merged, "--merge")
    assert code == 0, err
    m = transformers.AutoModelForCausalLM.from_pretrained(merged).float().eval()
    np.testing.assert_allclose(hf_logits(m, TOKENS), ref, atol=1e-4 * np.abs(ref).max())
    # ... and equals peft's own merge
    pm = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(folder).float(), adapter
    )
    peft_merged = pm.merge_and_unload().eval()
    np.testing.assert_allclose(
        hf_logits(m, TOKENS), hf_logits(peft_merged, TOKENS), atol=1e-4 * np.abs(ref).max()
    )
    # without --merge: the adapter folder
    code, out, err = run(capsys, "export", "hf", runs, "--out", tmp_path / "ad")
    assert code == 0 and "PEFT LoRA adapters" in out, err
    np.testing.assert_allclose(_peft_logits(folder, tmp_path / "ad"), ref, rtol=0, atol=1e-6)
    for cmd in (("generate", "--ckpt", adapter, "--prompt", "Once"),
                ("export", "hf", tmp_path / "ad", "--out", tmp_path / "again")):  # fmt: skip
        one_line_error(capsys, "a PEFT adapter folder (adapters without their base)", *cmd)
    # generate uses base plus adapters: greedy text is peft's greedy continuation, over the
    # base's whole vocabulary (not only the ids the fine-tuning data holds)
    prompt = "Once upon a time"
    code, out, err = run(capsys, "generate", "--ckpt", runs, "--prompt", prompt, "--max-tokens",
                         "12", "--temperature", "0")  # fmt: skip
    assert code == 0, err
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids, eos = tok.encode(prompt).ids, tok.token_to_id("<|endoftext|>")
    pm = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(folder).float(), adapter
    ).eval()
    assert out.strip() == _greedy_text(pm, tok, ids, 12, eos)


def test_lora_resume_is_bit_identical(base, tmp_path: Path) -> None:
    """N steps straight == N/2, checkpoint, resume, N/2 (as tests/test_checkpoint.py for full
    training), with adapters and their optimizer state only in the checkpoint."""
    from anetrain.data.tokens import TokenFile
    from anetrain.model.hf import import_hf
    from anetrain.model.lora import lora_config
    from anetrain.train.loop import TrainConfig, Trainer
    from anetrain.train.trainable import LoraTrainable

    folder, data = base
    h = import_hf(folder, seq_len=32)
    lora = lora_config(h.config, rank=2, alpha=8, targets="q,v,down")
    tokens = TokenFile(data, vocab_size=h.config.vocab_size)
    cfg = TrainConfig(steps=6, accum=1, warmup=0, lr=1e-2, eval_every=100, eval_windows=1)

    def trainer(out: Path, resume: bool = False) -> Trainer:
        tr = LoraTrainable(h.params, lora, base_path=str(folder))
        return Trainer(h.config, tokens, cfg, out, resume=resume, trainable=tr)

    straight = trainer(tmp_path / "straight")
    straight.run()
    first = trainer(tmp_path / "split")
    for _ in range(3):
        first.log(first.train_step().to_json())
    first.save(first.validate())
    first._metrics.close()
    first.pipeline.close()
    resumed = trainer(tmp_path / "split", resume=True)
    assert resumed.step == 3
    resumed.run()
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")
    assert np.array_equal(straight.trainable.values.flat, resumed.trainable.values.flat)
    assert np.array_equal(straight.adam.m, resumed.adam.m) and resumed.adam.t == 6
    assert straight.adam.m.size == straight.trainable.values.flat.size  # adapters only


def test_ctrl_c_then_cli_resume_of_a_lora_run(base, tmp_path: Path, capsys) -> None:
    import signal
    import subprocess
    import sys
    import time

    folder, data = base
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "anetrain.cli", "train", "--init", str(folder), "--data",
            str(data), "--lora-rank", "2", "--steps", "100000", "--sample-tokens", "0",
            "--out", str(out), *TRAIN]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Interrupted at step" in output, output
    stopped = json.loads((out / "summary.json").read_text())["steps"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # ... but --data, as every argument, is given again: without it the line names the base
    # (it once began "None:") and says so
    one_line_error(capsys, f"{folder.resolve()}: this model reads tokens of", "train", "--out",
                   out, "--resume", "--steps", stopped + 2, *TRAIN)  # fmt: skip
    one_line_error(capsys, "resume with the --data the run started with", "train", "--out", out,
                   "--resume", "--steps", stopped + 2, *TRAIN)  # fmt: skip
    # --resume needs no --init: the base comes from the checkpoint's record
    code, text, err = run(capsys, "train", "--out", out, "--resume", "--steps", stopped + 2,
                          "--data", data, "--sample-tokens", "0", *TRAIN)  # fmt: skip
    assert code == 0, err
    assert "LoRA rank 2" in text
    assert json.loads((out / "summary.json").read_text())["steps"] == stopped + 2
    # changed LoRA settings on resume are refused
    one_line_error(capsys, "LoRA settings", "train", "--out", out, "--resume", "--steps",
                   stopped + 4, "--lora-rank", "3", "--data", data, *TRAIN)  # fmt: skip


def test_lora_dropout_run_trains_and_peft_loads_it(base, tmp_path: Path, capsys) -> None:
    folder, data = base
    runs = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--init", folder, "--data", data, "--lora-rank", "4", "--lora-dropout",
        "0.1", "--steps", "12", "--eval-every", "6", "--sample-tokens", "0", "--out", runs, *TRAIN,
    )  # fmt: skip
    assert code == 0, err
    assert "LoRA rank 4, alpha 4, dropout 0.1 on" in out
    report = " ".join(out[out.index("Efficiency") :].split())
    assert "rank 4, alpha 4, dropout 0.1 on" in report, report
    losses = _losses(runs)
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3  # it learns
    code, frame, err = run(capsys, "dashboard", runs, "--once")
    assert code == 0 and "LoRA r4 alpha 4.0 dropout 0.1 on" in frame, err
    adapter = runs / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["lora_dropout"] == 0.1
    m = transformers.AutoModelForCausalLM.from_pretrained(folder).float()
    pm = peft.PeftModel.from_pretrained(m, adapter)
    assert pm.peft_config["default"].lora_dropout == 0.1
    # evaluation never drops: peft in eval mode computes our merged export's logits
    merged = tmp_path / "merged"
    code, out, err = run(capsys, "export", "hf", runs, "--out", merged, "--merge")
    assert code == 0, err
    ref = hf_logits(pm.eval(), TOKENS)
    mm = transformers.AutoModelForCausalLM.from_pretrained(merged).float().eval()
    np.testing.assert_allclose(hf_logits(mm, TOKENS), ref, atol=1e-4 * np.abs(ref).max())
    # a resume keeps the run's dropout, and refuses another
    one_line_error(capsys, "LoRA settings", "train", "--out", runs, "--resume", "--steps", "14",
                   "--lora-dropout", "0.2", "--data", data, *TRAIN)  # fmt: skip
    code, out, err = run(capsys, "train", "--out", runs, "--resume", "--steps", "14", "--data",
                         data, "--sample-tokens", "0", *TRAIN)  # fmt: skip
    assert code == 0 and "dropout 0.1" in out, err
    assert len(_losses(runs)) == 14


def test_bad_lora_input_one_line(base, tmp_path: Path, capsys) -> None:
    folder, data = base
    common = ("--data", data, "--steps", "1", *TRAIN)
    one_line_error(capsys, "--lora-rank needs --init", "train", "--lora-rank", "4", *common)
    for rank in ("0", "65"):
        one_line_error(capsys, "must be between 1 and", "train", "--init", folder,
                       "--lora-rank", rank, "--out", tmp_path / rank, *common)  # fmt: skip
    one_line_error(capsys, "unknown target 'qkv'", "train", "--init", folder, "--lora-rank", "2",
                   "--lora-targets", "q,qkv", "--out", tmp_path / "t", *common)  # fmt: skip
    one_line_error(capsys, "--lora-targets: 'q' given twice", "train", "--init", folder,
                   "--lora-rank", "2", "--lora-targets", "q,v,q", "--out", tmp_path / "t",
                   *common)  # fmt: skip
    for p in ("-0.1", "1", "nan"):
        one_line_error(capsys, f"--lora-dropout {float(p)}: must be a probability in [0, 1)",
                       "train", "--init", folder, "--lora-rank", "2", "--lora-dropout", p,
                       "--out", tmp_path / "d", *common)  # fmt: skip
    one_line_error(capsys, "--lora-dropout needs --lora-rank", "train", "--init", folder,
                   "--lora-dropout", "0.1", "--out", tmp_path / "d", *common)  # fmt: skip
    assert not (tmp_path / "d").exists()
    # the static pipeline bakes the weights into its kernels: no LoRA gradient path there
    one_line_error(capsys, "--lora-rank needs --pipeline dynamic", "train", "--init", folder,
                   "--lora-rank", "2", "--pipeline", "static", "--out", tmp_path / "s",
                   *common)  # fmt: skip
    assert not (tmp_path / "t").exists()  # nothing written
    assert not (tmp_path / "s").exists()


def test_adapters_on_another_base_are_refused(base, tmp_path: Path, capsys) -> None:
    _, data = base
    folder, _, _ = save_fp16_folder(tmp_path / "hf", "qwen3", seed=0)
    runs = tmp_path / "run"
    code, _, err = run(capsys, "train", "--init", folder, "--data", data, "--lora-rank", "2",
                       "--steps", "1", "--sample-tokens", "0", "--out", runs, *TRAIN)  # fmt: skip
    assert code == 0, err
    other, _, _ = save_fp16_folder(tmp_path / "other", "qwen3", seed=1)
    for f in ("model.safetensors",):  # the base at the recorded path now holds other weights
        (folder / f).write_bytes((other / f).read_bytes())
    one_line_error(capsys, "adapters were trained on base", "generate", "--ckpt", runs,
                   "--prompt", "Once")  # fmt: skip
    one_line_error(capsys, "adapters were trained on base", "export", "hf", runs, "--out",
                   tmp_path / "x", "--merge")  # fmt: skip
    one_line_error(capsys, "adapters were trained on base", "train", "--out", runs, "--resume",
                   "--steps", "2", "--data", data, *TRAIN)  # fmt: skip


def test_the_merged_export_keeps_a_full_precision_base_as_it_was(tmp_path: Path, capsys) -> None:
    """Training holds the frozen base in fp16, but --merge folds the adapters into the base as
    stored (what peft's merge_and_unload does): an fp32 base's untouched tensors come out bit
    for bit, and the merged model equals peft's merge."""
    from safetensors.numpy import load_file

    from hf_models import save_folder

    folder, _, _ = save_folder(tmp_path / "hf32", "qwen3", seed=3)
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(TEXT * 10) + "\n")
    data = tmp_path / "t.bin"
    assert main(["data", "prepare", str(text), "--tokenizer", str(folder), "--out",
                 str(data)]) == 0  # fmt: skip
    runs = tmp_path / "run"
    code, _, err = run(capsys, "train", "--init", folder, "--data", data, "--lora-rank", "4",
                       "--lora-targets", "q,v", "--steps", "3", "--out", runs, *TRAIN)  # fmt: skip
    assert code == 0, err
    merged = tmp_path / "merged"
    code, _, err = run(capsys, "export", "hf", runs, "--out", merged, "--merge")
    assert code == 0, err
    before, after = load_file(folder / "model.safetensors"), load_file(merged / "model.safetensors")
    untouched = [k for k in before if "q_proj" not in k and "v_proj" not in k]
    assert any(  # the test tells the two apart: fp16 rounding would change these
        (before[k].astype(np.float16).astype(np.float32) != before[k]).any() for k in untouched
    )
    for key in untouched:
        np.testing.assert_array_equal(after[key].astype(np.float32), before[key], err_msg=key)
    pm = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(folder).float(), runs / "adapter"
    )
    m = transformers.AutoModelForCausalLM.from_pretrained(merged).float().eval()
    ref = hf_logits(pm.merge_and_unload().eval(), TOKENS)
    np.testing.assert_allclose(hf_logits(m, TOKENS), ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_the_adapter_folder_is_the_checkpoint_generate_and_export_read(base, tmp_path: Path):
    """When the last checkpoint is not the best, RUN/adapter keeps the best adapters: the ones
    `generate --ckpt RUN` and `export hf RUN` use, so peft loads that very model. A damaged or
    deleted folder is written again from that checkpoint."""
    import shutil

    from safetensors.numpy import load_file

    from anetrain.data.tokens import TokenFile
    from anetrain.model.hf import import_hf
    from anetrain.model.loader import load_model
    from anetrain.model.lora import lora_config, peft_state_dict
    from anetrain.train.loop import TrainConfig, Trainer
    from anetrain.train.trainable import LoraTrainable

    folder, data = base
    h = import_hf(folder, seq_len=32)
    tr = LoraTrainable(h.params, lora_config(h.config, rank=2), base_path=str(folder))
    tokens = TokenFile(data, vocab_size=h.config.vocab_size)
    cfg = TrainConfig(steps=4, accum=1, warmup=0, lr=1e-2, eval_every=100, eval_windows=1)
    t = Trainer(h.config, tokens, cfg, tmp_path, trainable=tr)
    adapter = tmp_path / "adapter" / "adapter_model.safetensors"
    t.train_step()
    t.save()  # no validation yet: the last checkpoint is the one read
    assert not (tmp_path / "ckpt_best.safetensors").exists()
    first = peft_state_dict(tr.values)
    assert all(np.array_equal(load_file(adapter)[k], v) for k, v in first.items())
    t.train_step()
    t.save(1.0)  # best
    best = peft_state_dict(tr.values.copy())
    t.train_step()
    t.save(2.0)  # worse: the best checkpoint stays
    t.train_step()
    adapter.write_bytes(adapter.read_bytes()[:-64])  # damaged: written again from the best
    t.save()  # Ctrl-C or the end
    assert load_model(tmp_path).step == 2  # what generate and export read
    last = peft_state_dict(tr.values)
    assert any(not np.array_equal(last[k], best[k]) for k in best)  # the test tells them apart
    for damage in (None, lambda: shutil.rmtree(adapter.parent)):
        if damage is not None:
            damage()
            t.save()
        on_disk = load_file(adapter)
        assert on_disk.keys() == best.keys()
        for key, value in best.items():
            np.testing.assert_array_equal(on_disk[key], value, err_msg=key)
    t._metrics.close()
    t.pipeline.close()


def test_a_lora_run_samples_over_its_base_classifier_ids(tmp_path: Path, capsys) -> None:
    """Generation keeps to the ids the frozen classifier was trained over: an anetrain base's
    compacted vocabulary (a Hugging Face base: every id), not the fine-tuning data's."""
    from anetrain.data.tokens import write_tokens
    from anetrain.model.loader import load_model

    common = ("--steps", "2", "--sample-tokens", "0", *TRAIN)
    code, _, err = run(capsys, "train", "--model", "tiny", "--out", tmp_path / "full", *common)
    assert code == 0, err
    base_ids = load_model(tmp_path / "full").vocab_ids
    assert base_ids is not None and len(base_ids) > 40
    data = tmp_path / "few.bin"
    write_tokens(data, np.tile(np.asarray(base_ids[:40]), 300))  # fewer ids than the base's
    code, _, err = run(capsys, "train", "--init", tmp_path / "full", "--data", data,
                       "--lora-rank", "2", "--out", tmp_path / "lora", *common)  # fmt: skip
    assert code == 0, err
    assert load_model(tmp_path / "lora").vocab_ids == base_ids


def test_fine_tuning_trains_over_the_full_vocabulary_and_a_resume_keeps_it(
    base, tmp_path: Path, capsys
) -> None:
    """--init makes --vocab auto the full vocabulary (LoRA and full fine-tuning alike): the
    startup line, the report and the checkpoint say so, nothing restricts the samples, and a
    resume naming another vocabulary is one line; --vocab data keeps the data's ids."""
    folder, data = base
    common = ("--steps", "2", "--sample-tokens", "0", *TRAIN)
    runs = tmp_path / "lora"
    code, out, err = run(capsys, "train", "--init", folder, "--data", data, "--lora-rank", "2",
                         "--out", runs, *common)  # fmt: skip
    assert code == 0, err
    assert "Loss over the full vocab, 320 ids (--vocab full)" in out
    report = out[out.index("Efficiency Report") :]
    assert "Loss (full vocab, 320 ids)" in report and "Val loss, full vocab" not in report
    extra = read_metadata(runs / "ckpt_last.safetensors")["extra"]
    assert extra["train"]["vocab"] == "full" and extra["vocab_ids"] is None
    summary = json.loads((runs / "summary.json").read_text())
    assert summary["vocab"] == "full" and summary["vocab_ids_trained"] == 320
    code, frame, err = run(capsys, "dashboard", runs, "--once")
    assert code == 0 and "Loss (full vocab)" in frame, err
    resume = ("train", "--out", runs, "--resume", "--data", data, *common[2:], "--steps", "3")
    one_line_error(capsys, "a resume keeps it: drop --vocab data", *resume, "--vocab", "data")
    code, out, err = run(capsys, *resume)
    assert code == 0 and "(--vocab full)" in out, err
    # full fine-tuning over the full vocabulary on data of 20 ids: generate samples from every
    # id, as transformers does with the exported weights
    from anetrain.data.tokens import write_tokens

    write_tokens(tmp_path / "few.bin", np.tile(np.arange(100, 120), 400))
    code, out, err = run(capsys, "train", "--init", folder, "--data", tmp_path / "few.bin",
                         "--out", tmp_path / "ft", *common)  # fmt: skip
    assert code == 0 and "(--vocab full)" in out, err
    from anetrain.model.loader import load_model

    assert load_model(tmp_path / "ft").vocab_ids is None
    code, _, err = run(capsys, "export", "hf", tmp_path / "ft", "--out", tmp_path / "ft-hf")
    assert code == 0, err
    prompt = "Once upon a time"
    code, text, err = run(capsys, "generate", "--ckpt", tmp_path / "ft", "--prompt", prompt,
                          "--max-tokens", "12", "--temperature", "0")  # fmt: skip
    assert code == 0, err
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ft-hf").float().eval()
    ids, eos = tok.encode(prompt).ids, tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        greedy = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0]
    assert any(not 100 <= t < 120 for t in greedy[len(ids) :].tolist())  # ids the data lacks
    assert text.strip() == _greedy_text(hf, tok, ids, 12, eos)
    # full fine-tuning from the same folder, the data's ids asked for
    code, out, err = run(capsys, "train", "--init", folder, "--data", data, "--vocab", "data",
                         "--out", tmp_path / "full", *common)  # fmt: skip
    assert code == 0, err
    ids = read_metadata(tmp_path / "full" / "ckpt_last.safetensors")["extra"]["vocab_ids"]
    from anetrain.data.tokens import TokenFile

    assert ids == np.unique(np.asarray(TokenFile(data, vocab_size=320).tokens)).tolist()
    assert len(ids) < 320
    assert f"Loss over the data's vocab, {len(ids)} of 320 ids (--vocab data)" in out
    report = out[out.index("Efficiency Report") :]
    assert f"Loss (data's vocab, {len(ids)} of 320 ids)" in report and "Val loss, full" in report


def test_the_memory_estimate_counts_the_full_classifier(base, tmp_path: Path, capsys) -> None:
    """A full-vocabulary run's estimate holds the classifier's fp32 [V, D] temporary of a
    window: a --max-memory between the two estimates lets --vocab data start and refuses the
    full vocabulary --init trains over by default."""
    from anetrain.memory import training_bytes
    from anetrain.model.loader import load_model

    folder, data = base
    model = load_model(folder).config
    data_need, full_need = training_bytes(model), training_bytes(model, full_vocab=True)
    assert full_need - data_need == model.vocab_size * model.dim * 4
    common = ("--init", folder, "--data", data, "--steps", "1", "--sample-tokens", "0", *TRAIN)
    limit = str((data_need + full_need) // 2)
    one_line_error(capsys, "above --max-memory", "train", *common, "--max-memory", limit,
                   "--out", tmp_path / "full")  # fmt: skip
    code, _, err = run(capsys, "train", *common, "--max-memory", limit, "--vocab", "data",
                       "--out", tmp_path / "data")  # fmt: skip
    assert code == 0, err
