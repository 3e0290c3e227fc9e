"""Token files: validation errors, the train/val split, seeded windows and sampler resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anetrain.data import DataError, TokenFile, write_tokens
from anetrain.data.tokens import TokenWriter
from anetrain.errors import AnetrainError


def stories_file(tmp_path: Path, n_stories: int = 200, length: int = 40, seed: int = 0) -> Path:
    """BOS-separated fake stories with ids in [3, 500)."""
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for _ in range(n_stories):
        ids.append(1)
        ids += rng.integers(3, 500, size=length).tolist()
    path = tmp_path / "tokens.bin"
    write_tokens(path, ids)
    return path


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    ids = np.array([1, 2, 3, 65535, 0, 300], dtype=np.int64)
    path = tmp_path / "t.bin"
    assert write_tokens(path, ids) == 6
    assert path.read_bytes() == ids.astype("<u2").tobytes()  # flat LE uint16, no header
    tf = TokenFile(path)
    assert tf.n_tokens == 6
    assert tf.tokens.tolist() == ids.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]  # no temp files left behind


def test_write_rejects_ids_outside_uint16_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    with pytest.raises(DataError, match=r"token id 70000 at position 2 does not fit in uint16"):
        write_tokens(path, [1, 5, 70000])
    with pytest.raises(DataError, match=r"token id -1"):
        write_tokens(path, [-1])
    assert list(tmp_path.iterdir()) == []


def test_writer_keeps_old_file_when_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_tokens(path, [1, 2, 3])
    with pytest.raises(RuntimeError), TokenWriter(path) as w:
        w.write([9, 9])
        raise RuntimeError("crash mid-write")
    assert TokenFile(path).tokens.tolist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.bin: no such token file; run `anetrain data"):
        TokenFile(tmp_path / "nope.bin")


def test_odd_size(tmp_path: Path) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(b"\x01\x00\x05")
    with pytest.raises(DataError) as info:
        TokenFile(path)
    msg = str(info.value)
    assert str(path) in msg and "size 3 bytes is odd" in msg and "truncated" in msg
    assert isinstance(info.value, AnetrainError)


def test_ids_out_of_vocab_report_count_and_first_position(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_tokens(path, [1, 5, 600, 7, 700, 8])
    with pytest.raises(DataError) as info:
        TokenFile(path, vocab_size=512)
    msg = str(info.value)
    assert "2 token id(s) >= vocab size 512 (first at token 2, id 600)" in msg
    assert str(path) in msg and "different tokenizer" in msg
    TokenFile(path, vocab_size=701)  # fine with a big enough vocabulary


def test_too_few_tokens_for_a_window(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_tokens(path, [1] + [5] * 99)
    tf = TokenFile(path, val_fraction=0.1)
    with pytest.raises(DataError) as info:
        tf.sampler("train", seq_len=256)
    msg = str(info.value)
    assert "[train]" in msg and "needs seq_len + 1 = 257" in msg
    assert "a shorter seq_len (--config FILE.toml)" in msg  # a flag the CLI has (not --seq)
    with pytest.raises(DataError, match=r"\[val\]: has 10 tokens"):
        tf.sampler("val", seq_len=16)
    tf.sampler("train", seq_len=16)  # enough for short windows


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.bin"
    path.write_bytes(b"")
    tf = TokenFile(path)
    assert tf.n_tokens == 0
    with pytest.raises(DataError, match="has 0 tokens"):
        tf.sampler(seq_len=4)


def test_split_is_deterministic_and_starts_at_a_story(tmp_path: Path) -> None:
    tf = TokenFile(stories_file(tmp_path), vocab_size=512, val_fraction=0.1)
    n = tf.n_tokens
    assert n == 200 * 41
    assert tf.val[0] == 1  # validation starts with BOS: no story is split
    assert n - round(0.1 * n) <= tf.split_index <= n - round(0.1 * n) + 41
    assert len(tf.train) + len(tf.val) == n
    assert TokenFile(tf.path, val_fraction=0.1).split_index == tf.split_index
    assert TokenFile(tf.path, val_fraction=0.0).split_index == n
    with pytest.raises(DataError, match="val_fraction"):
        TokenFile(tf.path, val_fraction=1.0)
    with pytest.raises(DataError, match="unknown split"):
        tf.split("test")  # type: ignore[arg-type]


def test_windows_are_shifted_by_one_and_deterministic(tmp_path: Path) -> None:
    tf = TokenFile(stories_file(tmp_path), vocab_size=512)
    a, b = tf.sampler(seq_len=32, seed=7), tf.sampler(seq_len=32, seed=7)
    for _ in range(20):
        wa, wb = a.next_window(), b.next_window()
        assert wa.start == wb.start
        assert wa.inputs.shape == wa.targets.shape == (32,)
        assert np.array_equal(wa.inputs[1:], wa.targets[:-1])
        assert np.array_equal(wa.inputs, tf.train[wa.start : wa.start + 32])
        assert np.array_equal(wa.targets, tf.train[wa.start + 1 : wa.start + 33])
        assert 0 <= wa.start <= len(tf.train) - 33
    # The documented contract: starts are PCG64(seed).integers(0, n - seq_len).
    rng = np.random.Generator(np.random.PCG64(7))
    fresh = tf.sampler(seq_len=32, seed=7)
    assert [fresh.next_window().start for _ in range(5)] == [
        int(rng.integers(0, len(tf.train) - 32)) for _ in range(5)
    ]
    other = tf.sampler(seq_len=32, seed=8)
    assert [other.next_window().start for _ in range(5)] != [
        a.next_window().start for _ in range(5)
    ]


def test_batch_equals_consecutive_windows(tmp_path: Path) -> None:
    tf = TokenFile(stories_file(tmp_path))
    a, b = tf.sampler(seq_len=16, seed=3), tf.sampler(seq_len=16, seed=3)
    x, y = a.next_batch(6)
    windows = [b.next_window() for _ in range(6)]
    assert x.shape == y.shape == (6, 16) and x.dtype == np.int64
    assert np.array_equal(x, np.stack([w.inputs for w in windows]))
    assert np.array_equal(y, np.stack([w.targets for w in windows]))
    assert a.windows_drawn == b.windows_drawn == 6


def test_state_save_restore_gives_identical_windows(tmp_path: Path) -> None:
    tf = TokenFile(stories_file(tmp_path))
    run = tf.sampler(seq_len=16, seed=11)
    for _ in range(5):
        run.next_batch(4)
    state = json.loads(json.dumps(run.state_dict()))  # survives a JSON checkpoint
    expected = [run.next_batch(4) for _ in range(5)]

    resumed = tf.sampler(seq_len=16, seed=999)  # seed is overridden by the state
    resumed.load_state_dict(state)
    assert resumed.windows_drawn == 20 and resumed.seed == 11
    for x, y in expected:
        rx, ry = resumed.next_batch(4)
        assert np.array_equal(rx, x) and np.array_equal(ry, y)


def test_state_for_other_data_is_refused(tmp_path: Path) -> None:
    tf = TokenFile(stories_file(tmp_path))
    state = tf.sampler(seq_len=16).state_dict()
    with pytest.raises(DataError, match=r"seq_len=16 but this data has seq_len=32"):
        tf.sampler(seq_len=32).load_state_dict(state)
    with pytest.raises(DataError, match="n_tokens="):
        tf.sampler("val", seq_len=16).load_state_dict(state)
    bad = dict(state, bit_generator={"bit_generator": "MT19937"})
    with pytest.raises(DataError, match="malformed"):
        tf.sampler(seq_len=16).load_state_dict(bad)


def test_sequential_windows_cover_the_split(tmp_path: Path) -> None:
    tf = TokenFile(stories_file(tmp_path), val_fraction=0.2)
    wins = list(tf.sequential_windows("val", seq_len=64))
    assert len(wins) == (len(tf.val) - 1) // 64
    assert np.array_equal(np.concatenate([w.inputs for w in wins]), tf.val[: 64 * len(wins)])
    assert len(list(tf.sequential_windows("val", seq_len=64, max_windows=2))) == 2
