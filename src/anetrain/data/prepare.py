"""Turn text files into a token file (``anetrain data prepare``).

Input formats, chosen by extension:

* ``.txt`` and anything else: UTF-8 text. With ``split="blank"`` (default) stories are separated
  by one or more blank lines and may span several lines (inner newlines are kept); with
  ``split="line"`` every non-empty line is one story.
* ``.json``: a list of strings or of objects with a ``"story"`` field (TinyStories' raw format)
  or a ``"text"`` field.
* ``.jsonl``: one such string or object per line.

Each story is stripped of surrounding whitespace and encoded by the tokenizer's
``encode_document``: a llama2.c tokenizer as llama2.c's pretokenizer does (``BOS`` id 1, then
the story with the dummy-prefix space, no EOS); a Hugging Face tokenizer as the ``tokenizers``
library encodes it with its special tokens, then EOS. Vocabularies over 65,536 ids write the
wide (uint32, headed) token file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anetrain.data.errors import DataError
from anetrain.data.hf_tokenizer import HFTokenizer
from anetrain.data.progress import Progress, progress
from anetrain.data.tokenizer import Tokenizer
from anetrain.data.tokens import MAX_TOKEN_ID, TokenWriter

StorySplit = Literal["blank", "line"]
_FLUSH_TOKENS = 1 << 16


@dataclass(frozen=True)
class PrepareResult:
    path: Path
    n_stories: int
    n_tokens: int


def read_stories(
    path: str | os.PathLike[str], split: StorySplit = "blank", bar: Progress | None = None
) -> Iterator[str]:
    """Stories of one input file (see the module docstring for formats)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        yield from _json_stories(path, bar)
    elif suffix == ".jsonl":
        yield from _jsonl_stories(path, bar)
    else:
        yield from _text_stories(path, split, bar)


def prepare(
    inputs: Sequence[str | os.PathLike[str]],
    tokenizer: Tokenizer | HFTokenizer,
    out: str | os.PathLike[str],
    *,
    split: StorySplit = "blank",
    show_progress: bool = True,
) -> PrepareResult:
    """Encode every story of ``inputs`` (``encode_document`` each) into the token file ``out``."""
    wide = tokenizer.vocab_size > MAX_TOKEN_ID + 1
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: no such input file")
    total = sum(p.stat().st_size for p in paths)
    n_stories = 0
    bar_ctx = progress("tokenizing", total, enabled=show_progress)
    with TokenWriter(out, wide=wide) as writer, bar_ctx as bar:
        pending: list[int] = []
        for p in paths:
            for story in read_stories(p, split, bar):
                pending += tokenizer.encode_document(story)
                n_stories += 1
                if len(pending) >= _FLUSH_TOKENS:
                    writer.write(np.asarray(pending, dtype=np.uint32))
                    pending = []
        writer.write(np.asarray(pending, dtype=np.uint32))
        if n_stories == 0:
            names = ", ".join(str(p) for p in paths)
            raise DataError(f"{names}: no stories found (all inputs are empty or blank)")
    return PrepareResult(Path(out), n_stories, writer.n_tokens)


def _lines(path: Path, bar: Progress | None) -> Iterator[tuple[int, str]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if bar is not None:
                bar.update(len(raw))
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 ({err.reason} at byte {err.start}); "
                    "convert the file to UTF-8"
                ) from None


def _text_stories(path: Path, split: StorySplit, bar: Progress | None) -> Iterator[str]:
    if split not in ("blank", "line"):
        raise DataError(f"unknown story split {split!r}; use 'blank' or 'line'")
    lines: list[str] = []
    for _, line in _lines(path, bar):
        text = line.rstrip("\r\n")
        if split == "line":
            if text.strip():
                yield text.strip()
        elif text.strip():
            lines.append(text)
        elif lines:
            yield "\n".join(lines).strip()
            lines = []
    if lines:
        yield "\n".join(lines).strip()


def _story_of(item: Any, where: str) -> str | None:
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict) and isinstance(item.get("story", item.get("text")), str):
        text = item.get("story", item.get("text"))
    else:
        raise DataError(f'{where}: expected a string or an object with a "text" or "story" string')
    return text.strip() or None


def _json_stories(path: Path, bar: Progress | None) -> Iterator[str]:
    raw = path.read_bytes()
    if bar is not None:
        bar.update(len(raw))
    try:
        items = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of stories, got {type(items).__name__}")
    for i, item in enumerate(items):
        story = _story_of(item, f"{path}: item {i}")
        if story:
            yield story


def _jsonl_stories(path: Path, bar: Progress | None) -> Iterator[str]:
    for lineno, line in _lines(path, bar):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        story = _story_of(item, f"{path}:{lineno}")
        if story:
            yield story
