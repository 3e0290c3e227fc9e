"""Token data, tokenizers and the built-in story corpus.

* :mod:`.tokens` - memory-mapped uint16 token files, train/val split, seeded window sampling.
* :mod:`.tokenizer` - llama2.c ``tokenizer.bin`` read/write, BPE encode, decode.
* :mod:`.bpe` - training a small BPE vocabulary in that format.
* :mod:`.stories` / :mod:`.corpus` - the generated built-in corpus and its cached token file.
* :mod:`.prepare` / :mod:`.download` - text to tokens; fetching pretokenized TinyStories.
"""

from __future__ import annotations

from anetrain.data.corpus import (
    BUILTIN_VOCAB_SIZE,
    builtin_dataset,
    builtin_tokenizer,
    builtin_tokenizer_path,
    load_tokenizer,
)
from anetrain.data.errors import DataError, DownloadError, TokenizerError
from anetrain.data.tokenizer import BOS_ID, EOS_ID, Tokenizer
from anetrain.data.tokens import TokenFile, Window, WindowSampler, write_tokens

__all__ = [
    "BOS_ID",
    "BUILTIN_VOCAB_SIZE",
    "EOS_ID",
    "DataError",
    "DownloadError",
    "TokenFile",
    "Tokenizer",
    "TokenizerError",
    "Window",
    "WindowSampler",
    "builtin_dataset",
    "builtin_tokenizer",
    "builtin_tokenizer_path",
    "load_tokenizer",
    "write_tokens",
]
