"""tokenizer.json through the ``tokenizers`` library: data prepare encodes exactly as the library
does, wide (uint32) token files for big vocabularies, llama2.c uint16 files unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anetrain.cli import main
from anetrain.data import DataError, TokenFile
from anetrain.data.corpus import check_tokenizer, load_tokenizer
from anetrain.data.errors import TokenizerError
from anetrain.data.hf_tokenizer import HFTokenizer
from anetrain.data.prepare import prepare
from anetrain.data.tokens import WIDE_HEADER, TokenWriter
from hf_models import TEXT, build_tokenizer, tokenizers

SPECIALS = {"llama": ("<s>", "</s>"), "qwen3": (None, "<|endoftext|>")}


def tokenizer_dir(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / f"tok-{kind}"
    d.mkdir()
    build_tokenizer(kind).save(str(d / "tokenizer.json"))
    bos, eos = SPECIALS[kind]
    cfg = {"eos_token": eos} | ({"bos_token": bos} if bos else {})
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_prepare_encodes_exactly_as_the_library(tmp_path: Path, kind: str) -> None:
    d = tokenizer_dir(tmp_path, kind)
    docs = TEXT[:4]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = tmp_path / "t.bin"
    code = main(["data", "prepare", str(jsonl), "--tokenizer", str(d), "--out", str(out)])
    assert code == 0
    lib = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))  # the oracle
    eos = lib.token_to_id(SPECIALS[kind][1])
    expected = [i for t in docs for i in [*lib.encode(t).ids, eos]]
    if kind == "llama":
        assert expected[0] == lib.token_to_id("<s>")  # the post-processor's BOS is kept
    assert TokenFile(out).tokens.tolist() == expected
    # a small vocabulary keeps llama2.c's headerless uint16 layout
    assert out.read_bytes() == np.asarray(expected, dtype="<u2").tobytes()


def test_generation_stream_decodes_like_the_library(tmp_path: Path) -> None:
    tok = HFTokenizer.from_path(tokenizer_dir(tmp_path, "qwen3"))
    text = "Ünïcödé 🙂 robot"
    ids = tok.encode(text)
    stream = tok.stream()
    assert "".join(stream.step(i) for i in ids) == tok.decode(ids) == text
    assert tok.stop_ids == {tok.eos_id} and tok.bos_id is None


def test_wide_token_files_for_big_vocabularies(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000}
    lib = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    lib.pre_tokenizer = pre_tokenizers.Whitespace()
    lib.save(str(tmp_path / "tokenizer.json"))
    text = tmp_path / "a.txt"
    text.write_text("w1 w65535 w65536\n\nw69999 w3\n")
    out = tmp_path / "wide.bin"
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    result = prepare([text], tok, out, show_progress=False)
    assert result.n_tokens == 5 and out.read_bytes()[: len(WIDE_HEADER)] == WIDE_HEADER
    tf = TokenFile(out, vocab_size=70_001)
    assert tf.dtype == np.dtype("<u4") and tf.tokens.tolist() == [1, 65535, 65536, 69999, 3]
    (tmp_path / "cut.bin").write_bytes(out.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        TokenFile(tmp_path / "cut.bin")
    with pytest.raises(DataError, match="wide format"), TokenWriter(tmp_path / "n.bin") as w:
        w.write([70_000])


def test_tokenizer_model_vocabulary_mismatch(tmp_path: Path) -> None:
    tok = HFTokenizer.from_path(tokenizer_dir(tmp_path, "llama"))
    check_tokenizer(tok, tok.vocab_size + 40)  # padded model vocabularies are normal
    with pytest.raises(TokenizerError, match=f"tokenizer has {tok.vocab_size} tokens"):
        check_tokenizer(tok, tok.vocab_size - 1)
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json in this folder"):
        HFTokenizer.from_path(tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"not a valid tokenizer\.json"):
        HFTokenizer.from_path(tmp_path / "bad.json")
