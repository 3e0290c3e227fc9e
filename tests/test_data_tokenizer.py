"""llama2.c tokenizer.bin: file round trips, llama2.c encode/decode rules, BPE training."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anetrain.data import TokenizerError, builtin_tokenizer
from anetrain.data.bpe import train_bpe
from anetrain.data.build_assets import build
from anetrain.data.corpus import ASSET_DIR, BUILTIN_TOKENIZER_NAME, BUILTIN_VOCAB_SIZE
from anetrain.data.stories import generate_stories
from anetrain.data.tokenizer import Tokenizer, byte_piece, reference_encode

BUILTIN = builtin_tokenizer()
STORIES = generate_stories(300, seed=99)


def hand_vocab(merges: dict[str, float], chars: str = " lowerabc") -> Tokenizer:
    """llama2.c layout: specials, 256 byte tokens, single characters, then scored merges."""
    pieces = [b"<unk>", b"<s>", b"</s>", *(byte_piece(b) for b in range(256))]
    scores = [0.0] * len(pieces)
    for ch in chars:
        pieces.append(ch.encode())
        scores.append(0.0)
    for piece, score in merges.items():
        pieces.append(piece.encode())
        scores.append(score)
    return Tokenizer(pieces, scores)


def pieces_of(tok: Tokenizer, ids: list[int]) -> list[str]:
    return [tok.pieces[i].decode() for i in ids]


# ---- file format --------------------------------------------------------------------------------


def test_builtin_asset_round_trips_byte_for_byte() -> None:
    data = (ASSET_DIR / BUILTIN_TOKENIZER_NAME).read_bytes()
    tok = Tokenizer.from_bytes(data)
    assert tok.vocab_size == BUILTIN_VOCAB_SIZE
    assert tok.to_bytes() == data


def test_file_round_trip_preserves_odd_values(tmp_path: Path) -> None:
    scores = np.array([0.0, -1.5, np.nan, -0.0, 3e38], dtype=np.float32)
    scores[2] = np.frombuffer(b"\x01\x00\xc0\x7f", dtype="<f4")[0]  # NaN with a payload
    pieces = [b"<unk>", b"<s>", b"</s>", "\u00e9t\u00e9".encode(), b""]
    data = struct.pack("<i", 99) + b"".join(
        s.tobytes() + struct.pack("<i", len(p)) + p for s, p in zip(scores, pieces, strict=True)
    )
    tok = Tokenizer.from_bytes(data)
    assert tok.max_token_length == 99  # kept as read, not recomputed
    assert tok.pieces == pieces
    tok.save(tmp_path / "tok.bin")
    assert (tmp_path / "tok.bin").read_bytes() == data


def test_file_layout_matches_llama2c() -> None:
    tok = Tokenizer([b"<unk>", b"<s>", b"ab"], [0.0, 0.0, -2.5])
    assert tok.to_bytes() == (
        struct.pack("<i", 5)
        + struct.pack("<fi", 0.0, 5)
        + b"<unk>"
        + struct.pack("<fi", 0.0, 3)
        + b"<s>"
        + struct.pack("<fi", -2.5, 2)
        + b"ab"
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01\x00", r"2 bytes is too short"),
        (struct.pack("<i", -1) + struct.pack("<fi", 0, 1) + b"a", "negative max_token_length"),
        (struct.pack("<i", 4), "contains no tokens"),
        (
            struct.pack("<i", 4) + struct.pack("<fi", 0, 1) + b"a" + b"\x00\x00",
            "truncated at byte 13",
        ),
        (struct.pack("<i", 4) + struct.pack("<fi", 0, 9) + b"abc", r"token 0 at byte 4 claims 9"),
        (struct.pack("<i", 4) + struct.pack("<fi", 0, -3), "claims -3 bytes"),
    ],
)
def test_malformed_files(data: bytes, match: str) -> None:
    with pytest.raises(TokenizerError, match=match):
        Tokenizer.from_bytes(data, source="tok.bin")


def test_missing_file_and_vocab_mismatch(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        Tokenizer.from_file(tmp_path / "missing.bin")
    path = tmp_path / "t.bin"
    BUILTIN.save(path)
    with pytest.raises(TokenizerError, match="tokenizer has 512 tokens but the model needs 32000"):
        Tokenizer.from_file(path, vocab_size=32000)


# ---- llama2.c encode ----------------------------------------------------------------------------


def test_merges_follow_scores_not_order() -> None:
    tok = hand_vocab({" lower": 1.0, " low": 2.0, "er": 3.0, "low": 4.0, "lo": 5.0})
    ids = tok.encode("lower", bos=False)
    assert pieces_of(tok, ids) == [" lower"]
    # Without " lower" the last step is missing; " low" (2) beats nothing else.
    tok = hand_vocab({" low": 2.0, "er": 3.0, "low": 4.0, "lo": 5.0})
    assert pieces_of(tok, tok.encode("lower", bos=False)) == [" low", "er"]
    # "er" scored higher than "lo": merged first, then "lo", "low", " low".
    tok = hand_vocab({"er": 9.0, "lo": 5.0, "low": 4.0, " low": 2.0, "ow": 4.5})
    assert pieces_of(tok, tok.encode("lower", bos=False)) == [" low", "er"]


def test_ties_merge_leftmost_first() -> None:
    tok = hand_vocab({"aa": 1.0})
    assert pieces_of(tok, tok.encode("aaa", bos=False)) == [" ", "aa", "a"]
    assert pieces_of(tok, tok.encode("aaaaa", bos=False)) == [" ", "aa", "aa", "a"]


def test_scores_at_or_below_minus_1e10_never_merge() -> None:
    tok = hand_vocab({"ab": -1e10, "bc": -1e11})
    assert pieces_of(tok, tok.encode("abc", bos=False)) == [" ", "a", "b", "c"]


def test_bos_eos_dummy_prefix_and_empty_text() -> None:
    tok = hand_vocab({" a": 1.0})
    a = tok.piece_id(" a")
    assert tok.encode("a") == [1, a]
    assert tok.encode("a", bos=False, eos=True) == [a, 2]
    assert pieces_of(tok, tok.encode("a", bos=False, dummy_prefix=False)) == ["a"]
    assert tok.encode("") == [1]  # no dummy prefix for empty text, as in llama2.c
    assert tok.encode("", bos=False, eos=True) == [2]


def test_byte_fallback_uses_offset_three() -> None:
    tok = hand_vocab({})
    ids = tok.encode("a\u00e9", bos=False)
    assert ids[2:] == [0xC3 + 3, 0xA9 + 3]
    assert tok.decode([1, *ids]) == "a\u00e9"


def test_missing_character_without_byte_tokens_is_an_error() -> None:
    tok = Tokenizer([b"<unk>", b"<s>", b"</s>", b" ", b"a"], [0.0] * 5, source="tiny.bin")
    with pytest.raises(TokenizerError, match=r"tiny\.bin: character 'z' at position 2"):
        tok.encode("az")


def test_decode_rules() -> None:
    tok = hand_vocab({" low": 1.0})
    low = tok.piece_id(" low")
    assert tok.decode_piece(1, low) == b"low"  # leading space dropped after BOS only
    assert tok.decode_piece(5, low) == b" low"
    assert tok.decode_piece(0, 0x41 + 3) == b"A"  # <0x41>
    assert tok.decode([1, low, 2, 1, low]) == "lowlow"  # BOS/EOS print nothing
    assert tok.decode([0xC3 + 3]) == "\ufffd"  # lone UTF-8 lead byte
    with pytest.raises(TokenizerError, match="token id 9999 out of range"):
        tok.decode([9999])


def test_vocab_with_cross_space_pieces_uses_general_path() -> None:
    tok = hand_vocab({"a b": 3.0, "a ": 2.0, " b": 1.0})
    assert not tok._split_safe
    assert BUILTIN._split_safe
    ids = tok.encode("a b", bos=False)
    assert pieces_of(tok, ids) == [" ", "a b"]
    assert ids == reference_encode(tok, "a b", bos=False)


ALPHABET = st.text(alphabet=" abclowe\u00e9\u4e2d.", max_size=40)


@settings(max_examples=150, deadline=None)
@given(ALPHABET, st.booleans())
def test_fast_encode_matches_llama2c_loop(text: str, dummy: bool) -> None:
    safe = hand_vocab({"lo": 5.0, "low": 4.0, " low": 2.0, "er": 3.0, " a": 1.0, "aa": 1.0})
    unsafe = hand_vocab({"a a": 4.0, " ": 0.0, "  ": 3.5, "lo": 5.0, "o ": 1.0, "bc": 1.0})
    for tok in (safe, unsafe, BUILTIN):
        assert tok.encode(text, dummy_prefix=dummy) == reference_encode(
            tok, text, dummy_prefix=dummy
        )


# ---- round trips on the built-in tokenizer ------------------------------------------------------


def test_round_trip_on_corpus_stories() -> None:
    for story in STORIES:
        ids = BUILTIN.encode(story)
        assert BUILTIN.decode(ids) == story
    # Corpus text needs no byte fallback and compresses well.
    ids = [i for s in STORIES[:50] for i in BUILTIN.encode(s, bos=False)]
    assert all(i >= 259 for i in ids)
    assert sum(map(len, STORIES[:50])) / len(ids) > 2.0


def test_fast_path_matches_reference_on_corpus() -> None:
    for story in STORIES[:5]:
        assert BUILTIN.encode(story) == reference_encode(BUILTIN, story)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_arbitrary_unicode(text: str) -> None:
    # Lone surrogates cannot be UTF-8 encoded by any tokenizer; everything else must survive.
    text = text.encode("utf-8", "replace").decode("utf-8")
    assert BUILTIN.decode(BUILTIN.encode(text)) == text


def test_round_trip_special_looking_text() -> None:
    # The built-in vocabulary cannot merge "<", "0", "x"... into a byte or special piece.
    for text in ["<s> </s> <unk>", "<0x41><0xFF>", "\x00\t\n\r", "  two  spaces ", "🙂"]:
        assert BUILTIN.decode(BUILTIN.encode(text)) == text


# ---- training ------------------------------------------------------------------------------------


def test_bpe_training_layout_and_scores() -> None:
    tok = train_bpe(["low lower lowest", "low low slow"], vocab_size=280)
    assert tok.pieces[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert all(tok.pieces[3 + b] == byte_piece(b) for b in range(256))
    chars = tok.pieces[259:]
    singles = [p for p in chars if len(p.decode()) == 1]
    assert singles == sorted(singles) and b" " in singles
    merges = tok.pieces[259 + len(singles) :]
    assert merges[:2] == [b"lo", b"low"]  # most frequent pairs first
    scores = tok.scores[259 + len(singles) :].tolist()
    assert scores == [-float(i) for i in range(len(merges))]
    assert all(b" " not in p[1:] for p in tok.pieces)  # spaces only lead pieces
    assert tok.decode(tok.encode("slow lower")) == "slow lower"


def test_bpe_too_small_vocab() -> None:
    with pytest.raises(TokenizerError, match="vocab_size 100 is too small"):
        train_bpe(["abc"], vocab_size=100)


def test_rebuilding_the_asset_is_byte_identical(tmp_path: Path) -> None:
    (path,) = build(tmp_path)
    assert path.read_bytes() == (ASSET_DIR / BUILTIN_TOKENIZER_NAME).read_bytes()
