"""The built-in corpus: generated stories, the built-in tokenizer, and a cached token file.

``builtin_dataset()`` is what an offline default training run uses. Generating and tokenizing the
default 8,000 stories (~3.7 MB of text, ~1.6M tokens) takes well under a second, so nothing big is
committed; the token file is cached (written atomically) under a name that fingerprints the
corpus parameters, the generator's output and the tokenizer, so a change to either rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from anetrain.data.bpe import train_bpe
from anetrain.data.errors import TokenizerError
from anetrain.data.hf_tokenizer import HFTokenizer, is_hf_tokenizer_spec
from anetrain.data.paths import default_cache_dir
from anetrain.data.stories import DEFAULT_SEED, generate_stories, iter_stories
from anetrain.data.tokenizer import Tokenizer
from anetrain.data.tokens import TokenWriter
from anetrain.model.hf import looks_like_hub_id

CORPUS_VERSION = 1
DEFAULT_STORIES = 8000
BUILTIN_VOCAB_SIZE = 512
# The tokenizer is trained on the first stories of the default-seed corpus.
TOKENIZER_TRAIN_STORIES = 2000
ASSET_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_TOKENIZER_NAME = "builtin_tokenizer.bin"


def train_builtin_tokenizer() -> Tokenizer:
    """Deterministically train the built-in tokenizer (what ``build_assets`` ships)."""
    stories = generate_stories(TOKENIZER_TRAIN_STORIES, DEFAULT_SEED)
    return train_bpe(stories, vocab_size=BUILTIN_VOCAB_SIZE)


def builtin_tokenizer_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The shipped ``builtin_tokenizer.bin``; trained into the cache if the asset is missing."""
    asset = ASSET_DIR / BUILTIN_TOKENIZER_NAME
    if asset.is_file():
        return asset
    cached = Path(cache_dir or default_cache_dir()) / BUILTIN_TOKENIZER_NAME
    if not cached.is_file():
        train_builtin_tokenizer().save(cached)
    return cached


def builtin_tokenizer(cache_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
    return Tokenizer.from_file(builtin_tokenizer_path(cache_dir))


def load_tokenizer(
    spec: str | os.PathLike[str], vocab_size: int | None = None
) -> Tokenizer | HFTokenizer:
    """``"builtin"``, a llama2.c ``tokenizer.bin`` path, or a Hugging Face folder or
    ``tokenizer.json`` (through the ``tokenizers`` library)."""
    if is_hf_tokenizer_spec(spec):
        return HFTokenizer.from_path(spec)
    if looks_like_hub_id(str(spec)):
        raise TokenizerError(
            f"{spec}: no such local tokenizer; this looks like a Hugging Face hub id, but "
            "anetrain never downloads: fetch the model folder first and pass it (or its "
            "tokenizer.json)"
        )
    if str(spec) == "builtin":
        return Tokenizer.from_file(builtin_tokenizer_path(), vocab_size)
    return Tokenizer.from_file(spec, vocab_size)


def check_tokenizer(tok: Tokenizer | HFTokenizer, vocab_size: int) -> None:
    """Refuse a tokenizer that does not fit a model of ``vocab_size``: a llama2.c vocabulary
    must cover every id the model emits; a Hugging Face one (whose models pad their
    vocabulary, e.g. Qwen3: 151,669 tokens, 151,936 rows) must not produce ids beyond it."""
    if isinstance(tok, HFTokenizer):
        if tok.vocab_size > vocab_size:
            raise TokenizerError(
                f"{tok.source}: tokenizer has {tok.vocab_size} tokens but the model's vocab_size "
                f"is {vocab_size}; pass the tokenizer the model was trained with"
            )
    elif tok.vocab_size < vocab_size:
        raise TokenizerError(
            f"{tok.source}: tokenizer has {tok.vocab_size} tokens but the model emits ids up to "
            f"{vocab_size - 1} (vocab_size {vocab_size}); pass the tokenizer the model "
            "was trained with"
        )


def builtin_dataset(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    n_stories: int = DEFAULT_STORIES,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Path of the built-in corpus as a token file (built-in tokenizer), creating it if needed."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tok_path = builtin_tokenizer_path(directory)
    tok_bytes = tok_path.read_bytes()
    key = hashlib.sha256()
    key.update(f"v{CORPUS_VERSION} seed={seed} n={n_stories}\n".encode())
    key.update("\n".join(iter_stories(min(n_stories, 32), seed)).encode())
    key.update(tok_bytes)
    path = directory / f"builtin-s{seed}-n{n_stories}-{key.hexdigest()[:12]}.bin"
    if path.is_file() and path.stat().st_size > 0 and path.stat().st_size % 2 == 0:
        return path
    tok = Tokenizer.from_bytes(tok_bytes, source=str(tok_path))
    with TokenWriter(path) as out:
        batch: list[int] = []
        for text in iter_stories(n_stories, seed):
            batch += tok.encode(text, bos=True)
            if len(batch) >= 1 << 16:
                out.write(np.asarray(batch, dtype=np.uint16))
                batch = []
        out.write(np.asarray(batch, dtype=np.uint16))
    return path


def builtin_text(n_stories: int = DEFAULT_STORIES, seed: int = DEFAULT_SEED) -> str:
    """The corpus as plain text, stories separated by blank lines (``data prepare``'s format)."""
    return "\n\n".join(iter_stories(n_stories, seed)) + "\n"
