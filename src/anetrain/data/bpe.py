"""Train a small BPE vocabulary in llama2.c ``tokenizer.bin`` layout.

Layout: ``<unk> <s> </s>``, the 256 byte tokens ``<0x00>..<0xFF>`` (ids 3..258, the byte fallback
of llama2.c's encoder), one token per character seen in the training text (sorted), then merges
in the order they were learned. A merge's score is ``-rank``, so llama2.c's "merge the pair with
the highest score" replays the learned order.

Text is cut into chunks (a word or a punctuation run, with at most one leading space) and merges
never cross chunks. That keeps spaces only at the start of pieces, which lets
:class:`~anetrain.data.tokenizer.Tokenizer` encode word by word with a cache. Ties between equally
frequent pairs are broken by the pair's text, so training is deterministic.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable

from anetrain.data.errors import TokenizerError
from anetrain.data.tokenizer import BYTE_OFFSET, SPECIAL_PIECES, Tokenizer, byte_piece

_CHUNK = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\w\s]+|\s")
MIN_VOCAB = BYTE_OFFSET + 256


def chunk_counts(texts: Iterable[str]) -> Counter[str]:
    """Frequencies of pre-tokenized chunks; each text gets llama2.c's dummy-prefix space."""
    counts: Counter[str] = Counter()
    for text in texts:
        if text:
            counts.update(_CHUNK.findall(" " + text))
    return counts


def train_bpe(texts: Iterable[str], vocab_size: int = 512, min_count: int = 2) -> Tokenizer:
    """Learn merges on ``texts`` until ``vocab_size`` tokens or no pair occurs ``min_count``x."""
    counts = chunk_counts(texts)
    alphabet = sorted({ch for chunk in counts for ch in chunk})
    pieces: list[bytes] = [*SPECIAL_PIECES, *(byte_piece(b) for b in range(256))]
    pieces += [ch.encode() for ch in alphabet]
    if vocab_size < len(pieces):
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small: specials, byte tokens and the "
            f"{len(alphabet)} characters of the training text already need {len(pieces)}"
        )
    scores: list[float] = [0.0] * len(pieces)
    known = set(pieces)
    words = [(list(chunk), n) for chunk, n in counts.items()]
    rank = 0
    while len(pieces) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, n in words:
            for pair in itertools.pairwise(symbols):
                pairs[pair] += n
        if not pairs:
            break
        (left, right), n = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if n < min_count:
            break
        merged = left + right
        for symbols, _ in words:
            _apply(symbols, left, right, merged)
        raw = merged.encode()
        if raw not in known:  # another split of the same text may have produced it already
            known.add(raw)
            pieces.append(raw)
            scores.append(-float(rank))
            rank += 1
    return Tokenizer(pieces, scores, source="<trained>")


def _apply(symbols: list[str], left: str, right: str, merged: str) -> None:
    i = 0
    while i < len(symbols) - 1:
        if symbols[i] == left and symbols[i + 1] == right:
            symbols[i : i + 2] = [merged]
        i += 1
