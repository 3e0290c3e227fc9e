"""Pretokenized token files (llama2.c / TinyStories convention) and deterministic sampling.

Format: a flat array of little-endian ``uint16`` token ids, no header; ``BOS = 1`` precedes every
story. Vocabularies wider than 65,536 ids (Qwen3: 151,936) use the wide variant: the 16-byte
header ``b"ANETOKEN"``, uint32 version 1, uint32 bytes per id (4), then little-endian ``uint32``
ids. Files without that header are read as llama2.c's uint16 files, unchanged. Files are
memory-mapped, so a 40 MB shard costs no RAM until windows are read.

The last ``val_fraction`` of the tokens (moved forward to the next story start, so no story is
split between the two) is the validation split; the rest is training data. Training windows are
drawn by :class:`WindowSampler` from a seeded PCG64 generator whose full state can be saved in a
checkpoint and restored, so a resumed run sees exactly the windows an uninterrupted one would.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anetrain.data.errors import DataError
from anetrain.fsutil import atomic_writer

BOS_ID = 1
EOS_ID = 2
TOKEN_DTYPE = np.dtype("<u2")
MAX_TOKEN_ID = int(np.iinfo(np.uint16).max)
WIDE_DTYPE = np.dtype("<u4")
WIDE_MAGIC = b"ANETOKEN"
WIDE_HEADER = WIDE_MAGIC + (1).to_bytes(4, "little") + WIDE_DTYPE.itemsize.to_bytes(4, "little")
DEFAULT_SEQ_LEN = 256
DEFAULT_VAL_FRACTION = 0.05
# How far past the nominal cut the split looks for a BOS before giving up and cutting mid-story.
_BOS_SEARCH_TOKENS = 1 << 16

Split = Literal["train", "val"]


class TokenFile:
    """A memory-mapped token file with a deterministic train/validation split.

    ``vocab_size`` (when given) is checked against every id in the file up front, because an
    out-of-range id would otherwise surface much later as an index error deep in training.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        vocab_size: int | None = None,
        *,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> None:
        self.path = Path(path)
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise DataError(
                f"{self.path}: no such token file; run `anetrain data download tinystories` "
                "or `anetrain data prepare` to create one"
            ) from None
        offset, dtype = _layout(self.path, size)
        self.dtype = dtype
        self.n_tokens = (size - offset) // dtype.itemsize
        if self.n_tokens:
            self.tokens: np.ndarray = np.memmap(self.path, dtype=dtype, mode="r", offset=offset)
        else:  # np.memmap refuses empty files
            self.tokens = np.zeros(0, dtype=dtype)
        self.vocab_size = vocab_size
        if vocab_size is not None:
            check_ids(self.tokens, vocab_size, where=str(self.path))
        self.val_fraction = val_fraction
        self.split_index = _split_index(self.tokens, val_fraction)

    def __repr__(self) -> str:
        return (
            f"TokenFile({str(self.path)!r}, n_tokens={self.n_tokens}, "
            f"train={self.split_index}, val={self.n_tokens - self.split_index})"
        )

    def split(self, name: Split) -> np.ndarray:
        """The tokens of one split, as a read-only view of the memory map."""
        if name == "train":
            return self.tokens[: self.split_index]
        if name == "val":
            return self.tokens[self.split_index :]
        raise DataError(f"unknown split {name!r}; use 'train' or 'val'")

    @property
    def train(self) -> np.ndarray:
        return self.split("train")

    @property
    def val(self) -> np.ndarray:
        return self.split("val")

    def count(self, token_id: int = BOS_ID) -> int:
        """How often ``token_id`` occurs (with BOS: the number of stories)."""
        return int(np.count_nonzero(self.tokens == token_id))

    def sampler(
        self, split: Split = "train", seq_len: int = DEFAULT_SEQ_LEN, seed: int = 0
    ) -> WindowSampler:
        """A seeded random-window sampler over one split."""
        return WindowSampler(self.split(split), seq_len, seed, where=f"{self.path} [{split}]")

    def require_windows(self, seq_len: int, splits: tuple[Split, ...] = ("train", "val")) -> None:
        """Raise :class:`DataError` unless each split holds a window of ``seq_len + 1`` tokens,
        so a run too short for its data fails before its first step, not at its first eval."""
        for split in splits:
            _require_tokens(self.split(split), seq_len, f"{self.path} [{split}]")

    def sequential_windows(
        self, split: Split = "val", seq_len: int = DEFAULT_SEQ_LEN, max_windows: int | None = None
    ) -> Iterator[Window]:
        """Non-overlapping windows from the start of a split, for a reproducible eval loss."""
        self.require_windows(seq_len, (split,))
        data = self.split(split)
        n = (len(data) - 1) // seq_len
        if max_windows is not None:
            n = min(n, max_windows)
        for i in range(n):
            yield Window.from_tokens(data[i * seq_len : i * seq_len + seq_len + 1], i * seq_len)


@dataclass(frozen=True)
class Window:
    """``seq_len`` input ids and the targets shifted by one; ``start`` is the split offset."""

    inputs: np.ndarray
    targets: np.ndarray
    start: int

    @classmethod
    def from_tokens(cls, chunk: np.ndarray, start: int) -> Window:
        ids = np.asarray(chunk, dtype=np.int64)
        return cls(inputs=ids[:-1], targets=ids[1:], start=start)


class WindowSampler:
    """Uniformly random windows of ``seq_len + 1`` tokens, reproducible from a seed.

    Uses ``numpy.random.Generator(PCG64(seed))``; each window start is
    ``integers(0, n_tokens - seq_len)``. :meth:`state_dict` captures the generator state, so
    ``load_state_dict`` continues the exact sequence (for bit-identical checkpoint resume).
    """

    def __init__(
        self, tokens: np.ndarray, seq_len: int = DEFAULT_SEQ_LEN, seed: int = 0, *, where: str = ""
    ) -> None:
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1, got {seq_len}")
        _require_tokens(tokens, seq_len, where or "token array")
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = int(seed)
        self.where = where
        self.windows_drawn = 0
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    @property
    def n_starts(self) -> int:
        """Number of distinct window start positions."""
        return len(self.tokens) - self.seq_len

    def next_window(self) -> Window:
        start = int(self._rng.integers(0, self.n_starts))
        self.windows_drawn += 1
        return Window.from_tokens(self.tokens[start : start + self.seq_len + 1], start)

    def skip(self, n: int) -> None:
        """Draw and discard ``n`` windows (without reading their tokens): the stream then
        stands where ``n`` calls of :meth:`next_window` would have left it."""
        for _ in range(n):
            self._rng.integers(0, self.n_starts)
        self.windows_drawn += n

    def next_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)``, each ``int64 [batch_size, seq_len]``."""
        starts = self._rng.integers(0, self.n_starts, size=batch_size)
        self.windows_drawn += batch_size
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        chunk = np.asarray(self.tokens[idx], dtype=np.int64)
        return chunk[:, :-1], chunk[:, 1:]

    def __iter__(self) -> Iterator[Window]:
        while True:
            yield self.next_window()

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python (JSON-serialisable) state: seed, counters and the PCG64 state."""
        return {
            "seed": self.seed,
            "seq_len": self.seq_len,
            "n_tokens": len(self.tokens),
            "windows_drawn": self.windows_drawn,
            "bit_generator": _plain(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; refuses state saved for other data or shapes."""
        for key in ("seq_len", "n_tokens"):
            mine = self.seq_len if key == "seq_len" else len(self.tokens)
            if int(state.get(key, -1)) != mine:
                raise DataError(
                    f"{self.where or 'sampler'}: saved sampler state has {key}="
                    f"{state.get(key)} but this data has {key}={mine}; resume with the same "
                    "token file and sequence length the checkpoint was trained with"
                )
        try:
            self._rng.bit_generator.state = state["bit_generator"]
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"saved sampler state is malformed: {err}") from None
        self.seed = int(state["seed"])
        self.windows_drawn = int(state["windows_drawn"])


def check_ids(tokens: np.ndarray, vocab_size: int, *, where: str) -> None:
    """Raise :class:`DataError` if any id is ``>= vocab_size`` (with count and first position)."""
    bad = tokens >= vocab_size
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        first = int(np.argmax(bad))
        raise DataError(
            f"{where}: {n_bad} token id(s) >= vocab size {vocab_size} (first at token {first}, "
            f"id {int(tokens[first])}); the file was made with a different tokenizer - use the "
            "matching tokenizer/model vocabulary or re-create the file"
        )


def write_tokens(path: str | os.PathLike[str], ids: Iterable[int] | np.ndarray) -> int:
    """Write ids as a token file atomically; returns the number of tokens written."""
    with TokenWriter(path) as writer:
        writer.write(ids)
    return writer.n_tokens


class TokenWriter:
    """Stream token ids into a token file that appears atomically when the block succeeds.

    ``wide=True`` writes the headed uint32 variant (for vocabularies over 65,536 ids).
    """

    def __init__(self, path: str | os.PathLike[str], *, wide: bool = False) -> None:
        self.path = Path(path)
        self.n_tokens = 0
        self.wide = wide
        self._ctx = atomic_writer(self.path)
        self._fh: Any = None

    def __enter__(self) -> TokenWriter:
        self._fh = self._ctx.__enter__()
        if self.wide:
            self._fh.write(WIDE_HEADER)
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._ctx.__exit__(*exc)

    def write(self, ids: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if arr.size == 0:
            return
        if arr.dtype.kind not in "iu":
            raise DataError(f"{self.path}: token ids must be integers, got dtype {arr.dtype}")
        dtype = WIDE_DTYPE if self.wide else TOKEN_DTYPE
        top = int(np.iinfo(dtype).max)
        if int(arr.min()) < 0 or int(arr.max()) > top:
            bad = int(np.argmax((arr < 0) | (arr > top)))
            hint = "" if self.wide else "; vocabularies over 65,536 ids need the wide format"
            raise DataError(
                f"{self.path}: token id {int(arr.flat[bad])} at position {self.n_tokens + bad} "
                f"does not fit in {dtype.name} (0..{top}){hint}"
            )
        self._fh.write(arr.astype(dtype, copy=False).tobytes())
        self.n_tokens += int(arr.size)


def _layout(path: Path, size: int) -> tuple[int, np.dtype]:
    """(byte offset of the ids, their dtype): the wide header, else headerless uint16."""
    with path.open("rb") as fh:
        head = fh.read(len(WIDE_HEADER))
    if head[: len(WIDE_MAGIC)] == WIDE_MAGIC:
        if head != WIDE_HEADER:
            raise DataError(
                f"{path}: wide token file header {head[8:].hex()} is not version 1 with 4-byte "
                "ids; re-create it with `anetrain data prepare`"
            )
        if (size - len(WIDE_HEADER)) % WIDE_DTYPE.itemsize:
            raise DataError(
                f"{path}: {size - len(WIDE_HEADER)} bytes after the header is not a whole number "
                "of 4-byte ids; the file is truncated (re-create it)"
            )
        return len(WIDE_HEADER), WIDE_DTYPE
    if size % 2:
        raise DataError(
            f"{path}: size {size} bytes is odd, but a token file is a flat array of "
            "2-byte uint16 ids; the file is truncated or not a token file (re-download or "
            "re-create it)"
        )
    return 0, TOKEN_DTYPE


def _split_index(tokens: np.ndarray, val_fraction: float) -> int:
    n = len(tokens)
    n_val = round(n * val_fraction)
    if n_val == 0:
        return n
    cut = n - n_val
    # Start validation at a story boundary when one is near, so no story is split in two.
    ahead = tokens[cut : min(n, cut + _BOS_SEARCH_TOKENS)]
    hits = np.flatnonzero(ahead == BOS_ID)
    if len(hits) and cut + int(hits[0]) < n:
        return cut + int(hits[0])
    return cut


def _require_tokens(tokens: np.ndarray, seq_len: int, where: str) -> None:
    if len(tokens) < seq_len + 1:
        raise DataError(
            f"{where}: has {len(tokens)} tokens but a window needs seq_len + 1 = {seq_len + 1}; "
            "use a bigger token file, or a model with a shorter seq_len (--config FILE.toml)"
        )


def _plain(obj: Any) -> Any:
    """Turn numpy scalars inside a bit-generator state into plain Python values."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
