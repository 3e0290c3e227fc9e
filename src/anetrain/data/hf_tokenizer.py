"""Hugging Face ``tokenizer.json`` files through the ``tokenizers`` library (``anetrain[hf]``).

:class:`HFTokenizer` offers the same calls as the llama2.c :class:`~anetrain.data.tokenizer.
Tokenizer` (``encode``, ``decode``, ``encode_document``, ``stream``, ``stop_ids``), so data
preparation, training samples and generation take either. Encoding is the library's own
``Tokenizer.encode`` with its special tokens (Llama's BOS comes from the post-processor; Qwen3 adds
none); a document in a token file is that encoding followed by the EOS token when one is known
(``eos_token`` of ``tokenizer_config.json``, else ``eos_token_id`` of the folder's
``config.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anetrain.data.errors import TokenizerError

TOKENIZER_FILE = "tokenizer.json"


def is_hf_tokenizer_spec(spec: str | Path) -> bool:
    """A folder or a ``*.json`` path names a Hugging Face tokenizer (``tokenizer.bin`` does not)."""
    path = Path(spec)
    return path.is_dir() or path.suffix == ".json"


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` with the BOS/EOS ids its folder declares."""

    def __init__(self, tok: Any, *, source: str, bos_id: int | None, eos_id: int | None) -> None:
        self.tok = tok
        self.source = source
        self.bos_id = bos_id
        self.eos_id = eos_id

    @classmethod
    def from_path(cls, spec: str | Path) -> HFTokenizer:
        """``DIR`` (holding ``tokenizer.json``) or a ``tokenizer.json`` path."""
        path = Path(spec)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            where = f"{path}: no {TOKENIZER_FILE} in this folder" if path.is_dir() else path
            raise TokenizerError(f"{where}: no such tokenizer file; pass a folder or a .json file")
        try:
            from tokenizers import Tokenizer as RustTokenizer
        except ImportError:
            raise TokenizerError(
                f"{file}: reading tokenizer.json needs the tokenizers library: "
                "pip install 'anetrain[hf]'"
            ) from None
        try:
            tok = RustTokenizer.from_file(str(file))
        except Exception as err:  # the library raises a bare Exception for malformed files
            raise TokenizerError(f"{file}: not a valid tokenizer.json ({err})") from None
        bos, eos = _special_ids(tok, file.parent)
        return cls(tok, source=str(file), bos_id=bos, eos_id=eos)

    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, added tokens included."""
        return int(self.tok.get_vocab_size(with_added_tokens=True))

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end a generation (EOS)."""
        return frozenset(i for i in (self.eos_id,) if i is not None)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.source!r}, vocab_size={self.vocab_size})"

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """The library's encoding; ``bos`` adds the tokenizer's special tokens, ``eos`` EOS."""
        ids = list(self.tok.encode(text, add_special_tokens=bos).ids)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def encode_document(self, text: str) -> list[int]:
        """One document of a token file: special tokens, the text, then EOS when known."""
        return self.encode(text, bos=True, eos=True)

    def decode(self, ids: Any) -> str:
        return str(self.tok.decode([int(i) for i in ids], skip_special_tokens=True))

    def stream(self) -> _Stream:
        """An incremental decoder: ``step(id)`` returns the text that id completes."""
        return _Stream(self.tok)


class _Stream:
    def __init__(self, tok: Any) -> None:
        from tokenizers.decoders import DecodeStream

        self.tok = tok
        self.decoder = DecodeStream(skip_special_tokens=True)

    def step(self, token: int) -> str:
        return self.decoder.step(self.tok, int(token)) or ""

    def finish(self) -> str:
        return ""


def _special_ids(tok: Any, folder: Path) -> tuple[int | None, int | None]:
    """BOS/EOS ids from ``tokenizer_config.json`` tokens, else ``config.json`` ids."""
    ids: dict[str, int | None] = {"bos": None, "eos": None}
    cfg = _json(folder / "tokenizer_config.json")
    for kind in ids:
        token = cfg.get(f"{kind}_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            ids[kind] = tok.token_to_id(token)
    model_cfg = _json(folder / "config.json")
    for kind in ids:
        value = model_cfg.get(f"{kind}_token_id")
        if ids[kind] is None and isinstance(value, int):
            ids[kind] = value
    return ids["bos"], ids["eos"]


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TokenizerError(f"{path}: unreadable JSON ({err})") from None
    return data if isinstance(data, dict) else {}
