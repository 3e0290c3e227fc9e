"""llama2.c ``tokenizer.bin``: reading, writing, encoding and decoding.

File format (little-endian): ``int32 max_token_length``, then for every token ``float32 score,
int32 len, len bytes`` (UTF-8 text), until EOF. Ids 0, 1, 2 are ``<unk>``, ``<s>`` (BOS) and
``</s>`` (EOS); ids ``3 + b`` are byte tokens ``<0xXX>`` used as fallback for characters the
vocabulary lacks.

Encoding follows llama2.c's ``encode`` exactly: optional BOS, a dummy-prefix space piece, one piece
per UTF-8 character (or its bytes as ``<0xXX>`` tokens, id ``byte + 3``), then repeatedly merge the
adjacent pair whose concatenation is the vocabulary piece with the highest score (leftmost on
ties), and optional EOS. The merge loop is O(n log n) with a heap instead of llama2.c's O(n²)
rescans, and when the vocabulary can never merge across a space it also caches per-word results;
both give the same ids as the reference loop (tests compare them).
"""

from __future__ import annotations

import heapq
import os
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from anetrain.data.errors import TokenizerError
from anetrain.fsutil import atomic_write

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3
SPECIAL_PIECES = (b"<unk>", b"<s>", b"</s>")
# llama2.c starts its best-score search at -1e10 with a strict '>', so lower scores never merge.
_MIN_MERGE_SCORE = -1e10
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_CACHE_LIMIT = 1 << 17


def byte_piece(b: int) -> bytes:
    """The piece of the byte-fallback token for byte ``b`` (``<0x41>``)."""
    return b"<0x%02X>" % b


class Tokenizer:
    """A llama2.c vocabulary: pieces (raw bytes), float32 scores and ``max_token_length``."""

    def __init__(
        self,
        pieces: Sequence[bytes],
        scores: Sequence[float] | np.ndarray,
        max_token_length: int | None = None,
        *,
        source: str = "<memory>",
    ) -> None:
        if len(pieces) != len(scores):
            raise TokenizerError(f"{source}: {len(pieces)} pieces but {len(scores)} scores")
        self.pieces: list[bytes] = [bytes(p) for p in pieces]
        self.scores = np.asarray(scores, dtype=np.float32)
        longest = max((len(p) for p in self.pieces), default=0)
        self.max_token_length = longest if max_token_length is None else int(max_token_length)
        self.source = source
        self._index: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self._index.setdefault(p, i)
        self._score = [float(s) for s in self.scores]
        self._has_byte_tokens = len(self.pieces) >= BYTE_OFFSET + 256 and all(
            self.pieces[BYTE_OFFSET + b] == byte_piece(b) for b in range(256)
        )
        self._byte_values: dict[int, int] = {}
        for i, p in enumerate(self.pieces):
            m = _BYTE_PIECE.fullmatch(p)
            if m:
                self._byte_values[i] = int(m.group(1), 16)
        self._space_id = self._index.get(b" ")
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._split_safe = self._can_split_at_spaces()

    # ---- file format -------------------------------------------------------------------------

    @classmethod
    def from_bytes(
        cls, data: bytes, *, source: str = "<bytes>", vocab_size: int | None = None
    ) -> Tokenizer:
        """Parse a ``tokenizer.bin`` image; ``vocab_size`` (if given) must match its length."""
        if len(data) < 4:
            raise TokenizerError(
                f"{source}: {len(data)} bytes is too short for a tokenizer.bin header "
                "(int32 max_token_length); is this a llama2.c tokenizer file?"
            )
        (max_len,) = struct.unpack_from("<i", data, 0)
        if max_len < 0:
            raise TokenizerError(f"{source}: negative max_token_length {max_len}; file corrupt")
        pieces: list[bytes] = []
        scores: list[float] = []
        off = 4
        while off < len(data):
            if off + 8 > len(data):
                raise TokenizerError(
                    f"{source}: truncated at byte {off} (token {len(pieces)}): needs 8 header "
                    f"bytes, {len(data) - off} left; re-download or rebuild the tokenizer"
                )
            score, n = struct.unpack_from("<fi", data, off)
            off += 8
            if n < 0 or off + n > len(data):
                raise TokenizerError(
                    f"{source}: token {len(pieces)} at byte {off - 8} claims {n} bytes but "
                    f"{len(data) - off} remain; the file is truncated or corrupt"
                )
            pieces.append(data[off : off + n])
            scores.append(score)
            off += n
        if not pieces:
            raise TokenizerError(f"{source}: contains no tokens")
        if vocab_size is not None and vocab_size != len(pieces):
            raise TokenizerError(
                f"{source}: tokenizer has {len(pieces)} tokens but the model needs {vocab_size}; "
                "use the tokenizer the data and model were made with"
            )
        return cls(pieces, np.asarray(scores, dtype=np.float32), max_len, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], vocab_size: int | None = None) -> Tokenizer:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise TokenizerError(
                f"{path}: no such tokenizer file; pass a llama2.c tokenizer.bin or 'builtin'"
            ) from None
        return cls.from_bytes(data, source=str(path), vocab_size=vocab_size)

    def to_bytes(self) -> bytes:
        raw_scores = self.scores.astype("<f4").tobytes()
        out = [struct.pack("<i", self.max_token_length)]
        for i, piece in enumerate(self.pieces):
            out.append(raw_scores[4 * i : 4 * i + 4] + struct.pack("<i", len(piece)) + piece)
        return b"".join(out)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.bin`` atomically."""
        atomic_write(path, self.to_bytes())

    # ---- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __len__(self) -> int:
        return len(self.pieces)

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size})"

    def piece_id(self, piece: str | bytes) -> int | None:
        """Id of an exact piece, or ``None``."""
        return self._index.get(piece.encode() if isinstance(piece, str) else piece)

    # ---- decoding --------------------------------------------------------------------------------

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        """llama2.c ``decode``: drop the leading space after BOS; byte tokens give their byte."""
        piece = self.pieces[token]
        if prev_token == BOS_ID and piece[:1] == b" ":
            piece = piece[1:]
        byte = self._byte_values.get(token)
        return bytes((byte,)) if byte is not None else piece

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; BOS/EOS produce nothing, invalid UTF-8 becomes U+FFFD."""
        out = bytearray()
        prev = -1
        for tok in ids:
            tok = int(tok)
            if not 0 <= tok < len(self.pieces):
                raise TokenizerError(
                    f"{self.source}: token id {tok} out of range for vocab size {self.vocab_size}"
                )
            if tok not in (BOS_ID, EOS_ID):
                out += self.decode_piece(prev, tok)
            prev = tok
        return out.decode("utf-8", errors="replace")

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end a generation (BOS starts a new story, EOS ends one)."""
        return frozenset((BOS_ID, EOS_ID))

    def stream(self) -> PieceStream:
        """An incremental decoder: ``step(id)`` returns the text that id completes."""
        return PieceStream(self)

    # ---- encoding --------------------------------------------------------------------------------

    def encode_document(self, text: str) -> list[int]:
        """One story of a token file, as llama2.c's pretokenizer writes it: BOS, text, no EOS."""
        return self.encode(text, bos=True, eos=False)

    def encode(
        self, text: str, bos: bool = True, eos: bool = False, dummy_prefix: bool = True
    ) -> list[int]:
        """llama2.c ``encode`` (with ``add_dummy_prefix``): ids for ``text``."""
        ids: list[int] = [BOS_ID] if bos else []
        if text:
            if dummy_prefix:
                text = " " + text
            if self._split_safe:
                first, *rest = text.split(" ")
                if first:
                    ids.extend(self._encode_word(first))
                for word in rest:
                    ids.extend(self._encode_word(" " + word))
            else:
                ids = self._merge(ids + self._initial_ids(text))
        if eos:
            ids.append(EOS_ID)
        return ids

    def _encode_word(self, word: str) -> tuple[int, ...]:
        hit = self._word_cache.get(word)
        if hit is None:
            if len(self._word_cache) >= _CACHE_LIMIT:
                self._word_cache.clear()
            hit = tuple(self._merge(self._initial_ids(word)))
            self._word_cache[word] = hit
        return hit

    def _initial_ids(self, text: str) -> list[int]:
        """One id per character, or its UTF-8 bytes as byte tokens (id ``byte + 3``)."""
        ids: list[int] = []
        index = self._index
        for pos, ch in enumerate(text):
            raw = ch.encode("utf-8", errors="surrogatepass")
            tid = index.get(raw)
            if tid is not None:
                ids.append(tid)
                continue
            if not self._has_byte_tokens:
                raise TokenizerError(
                    f"{self.source}: character {ch!r} at position {pos} is not in the vocabulary "
                    "and the vocabulary has no <0xXX> byte tokens at ids 3..258 to fall back on"
                )
            ids.extend(b + BYTE_OFFSET for b in raw)
        return ids

    def _merge(self, ids: list[int]) -> list[int]:
        """Greedy highest-score pair merging, as llama2.c's loop but with a heap."""
        n = len(ids)
        if n < 2:
            return ids
        pieces, index, score = self.pieces, self._index, self._score
        tok = list(ids)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap: list[tuple[float, int, int, int, int]] = []

        def candidate(i: int, j: int) -> tuple[float, int, int, int, int] | None:
            m = index.get(pieces[tok[i]] + pieces[tok[j]])
            if m is not None and score[m] > _MIN_MERGE_SCORE:
                return (-score[m], i, tok[i], tok[j], m)  # leftmost wins ties, as in llama2.c
            return None

        for i in range(n - 1):
            c = candidate(i, i + 1)
            if c:
                heap.append(c)
        heapq.heapify(heap)
        while heap:
            _, i, a, b, m = heapq.heappop(heap)
            j = nxt[i]
            if not alive[i] or j < 0 or tok[i] != a or tok[j] != b:
                continue  # stale: one side was merged since this pair was queued
            tok[i] = m
            alive[j] = False
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
            if prv[i] >= 0 and (c := candidate(prv[i], i)):
                heapq.heappush(heap, c)
            if k >= 0 and (c := candidate(i, k)):
                heapq.heappush(heap, c)
        out = []
        i = 0
        while i >= 0:
            out.append(tok[i])
            i = nxt[i]
        return out

    def _can_split_at_spaces(self) -> bool:
        """True if no merge can ever cross a space, so words can be encoded independently.

        A merge across the boundary before a space would create a piece holding ``b" "`` after
        its first byte (the space is its own piece and starts the right-hand token), and a merge
        with BOS would create a piece starting with BOS's piece. If the vocabulary has neither,
        encoding ``" w1 w2 ..."`` equals concatenating the encodings of ``" w1"``, ``" w2"``...
        """
        if self._space_id is None or any(not p for p in self.pieces):
            return False
        if any(b" " in p[1:] for p in self.pieces):
            return False
        bos = self.pieces[BOS_ID] if len(self.pieces) > BOS_ID else None
        return not any(
            i != BOS_ID and bos is not None and p.startswith(bos) for i, p in enumerate(self.pieces)
        )


class PieceStream:
    """Pieces to text as they arrive; UTF-8 split across byte tokens is held until complete."""

    def __init__(self, tok: Tokenizer) -> None:
        import codecs

        self.tok = tok
        self.prev = -1
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token: int) -> str:
        text = ""
        if token not in (BOS_ID, EOS_ID):
            text = self.decoder.decode(self.tok.decode_piece(self.prev, token))
        self.prev = token
        return text

    def finish(self) -> str:
        return self.decoder.decode(b"", final=True)


def reference_encode(
    tok: Tokenizer, text: str, bos: bool = True, eos: bool = False, dummy_prefix: bool = True
) -> list[int]:
    """Direct O(n²) port of llama2.c's ``encode``; slow, kept as the oracle for tests."""
    ids = [BOS_ID] if bos else []
    if text:
        if dummy_prefix:
            text = " " + text
        ids += tok._initial_ids(text)
    while True:
        best_score, best_id, best_idx = _MIN_MERGE_SCORE, -1, -1
        for i in range(len(ids) - 1):
            m = tok._index.get(tok.pieces[ids[i]] + tok.pieces[ids[i + 1]])
            if m is not None and tok._score[m] > best_score:
                best_score, best_id, best_idx = tok._score[m], m, i
        if best_idx < 0:
            break
        ids[best_idx : best_idx + 2] = [best_id]
    if eos:
        ids.append(EOS_ID)
    return ids
