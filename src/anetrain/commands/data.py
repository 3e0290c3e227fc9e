"""``anetrain data``: download, prepare, inspect and build token data.

* ``data download tinystories [--out DIR]`` - the pretokenized TinyStories shard (Llama-2 32K).
* ``data prepare TEXT... --tokenizer T --out FILE.bin`` - text files to a token file.
* ``data builtin [--cache-dir DIR]`` - build (or find) the built-in corpus token file.
* ``data info FILE.bin [--tokenizer T]`` - counts, split sizes and a decoded sample.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from anetrain.commands.args import count, file_path, number, output_folder, seed, tokenizer_arg


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` command (with its actions) to the top-level subparsers."""
    parser = subparsers.add_parser(
        "data",
        help="download, prepare and inspect token data",
        description="Download, prepare and inspect token files (uint16 ids, BOS=1 per story).",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    dl = actions.add_parser(
        "download",
        help="download the pretokenized TinyStories shard",
        description="Fetch data00.bin of the Llama-2 32K pretokenized TinyStories archive and "
        "store it as tinystories_data00.bin.",
    )
    dl.add_argument("dataset", choices=["tinystories"], help="dataset to fetch")
    dl.add_argument(
        "--out", type=output_folder, default=None, help="directory (default: the cache dir)"
    )
    dl.add_argument("--url", default=None, help="archive URL or file:// path (mirror)")
    dl.add_argument(
        "--timeout", type=number(above=0), default=30.0, help="network timeout in seconds"
    )
    dl.add_argument("--force", action="store_true", help="download even if the file exists")
    dl.add_argument("--quiet", action="store_true", help="no progress output")
    dl.set_defaults(handler=_download)

    prep = actions.add_parser(
        "prepare",
        help="tokenize text files into a token file",
        description="Encode stories into a token file: a llama2.c tokenizer writes BOS before "
        "each story (uint16 ids); a Hugging Face tokenizer.json encodes exactly as the "
        "tokenizers library does, then EOS (uint32 ids with a header when the vocabulary "
        "exceeds 65,536). .txt: stories separated by blank lines (or one per line with "
        '--stories line); .json/.jsonl: strings or objects with a "text" or "story" field.',
    )
    prep.add_argument(
        "inputs", nargs="+", type=file_path, metavar="TEXT_OR_JSONL", help="input files"
    )
    prep.add_argument(
        "--tokenizer",
        type=tokenizer_arg,
        default="builtin",
        help="tokenizer.bin path, a tokenizer.json or the folder holding it, or 'builtin' "
        "(default)",
    )
    prep.add_argument("--out", type=file_path, required=True, help="output token file (.bin)")
    prep.add_argument(
        "--stories",
        choices=["blank", "line"],
        default="blank",
        help="in text files, stories are separated by blank lines (default) or one per line",
    )
    prep.add_argument("--quiet", action="store_true", help="no progress output")
    prep.set_defaults(handler=_prepare)

    builtin = actions.add_parser(
        "builtin",
        help="build the built-in story corpus as a token file",
        description="Generate the built-in stories, tokenize them with the built-in tokenizer "
        "and cache the token file (reused when it already exists).",
    )
    builtin.add_argument("--cache-dir", type=output_folder, default=None, help="where to cache it")
    builtin.add_argument("--stories", type=count(1), default=None, help="number of stories")
    builtin.add_argument("--seed", type=seed, default=None, help="generator seed")
    builtin.add_argument("--text", type=file_path, default=None, help="also write the text here")
    builtin.set_defaults(handler=_builtin)

    info = actions.add_parser("info", help="describe a token file")
    info.add_argument("file", type=file_path, help="token file")
    info.add_argument(
        "--tokenizer",
        type=tokenizer_arg,
        default=None,
        help="tokenizer.bin, tokenizer.json or 'builtin' to decode",
    )
    info.add_argument("--vocab-size", type=count(1), default=None, help="check ids against this")
    info.set_defaults(handler=_info)
    return parser


def _download(args: argparse.Namespace) -> int:
    from anetrain.data.download import TINYSTORIES_URL, download_tinystories
    from anetrain.data.tokens import TokenFile

    path = download_tinystories(
        args.out,
        url=args.url or TINYSTORIES_URL,
        timeout=args.timeout,
        force=args.force,
        show_progress=not args.quiet,
    )
    tf = TokenFile(path)
    first = " ".join(str(int(t)) for t in tf.tokens[:10])
    print(f"{path}: {tf.n_tokens:,} tokens ({path.stat().st_size / 1e6:.1f} MB); first: {first}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from anetrain.data.corpus import load_tokenizer
    from anetrain.data.prepare import prepare

    tok = load_tokenizer(args.tokenizer)
    result = prepare(args.inputs, tok, args.out, split=args.stories, show_progress=not args.quiet)
    print(
        f"{result.path}: {result.n_stories:,} stories, {result.n_tokens:,} tokens "
        f"(vocab {tok.vocab_size})"
    )
    return 0


def _builtin(args: argparse.Namespace) -> int:
    from anetrain.data import corpus
    from anetrain.data.tokens import TokenFile

    n = args.stories if args.stories is not None else corpus.DEFAULT_STORIES
    seed = args.seed if args.seed is not None else corpus.DEFAULT_SEED
    path = corpus.builtin_dataset(args.cache_dir, n_stories=n, seed=seed)
    if args.text is not None:
        from anetrain.fsutil import atomic_write

        atomic_write(args.text, corpus.builtin_text(n, seed).encode())
    tf = TokenFile(path, corpus.BUILTIN_VOCAB_SIZE)
    print(f"tokens:    {path} ({tf.n_tokens:,} tokens, {n:,} stories)")
    print(f"tokenizer: {corpus.builtin_tokenizer_path(args.cache_dir)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from anetrain.data.corpus import load_tokenizer
    from anetrain.data.tokens import BOS_ID, TokenFile

    tok = load_tokenizer(args.tokenizer) if args.tokenizer else None
    vocab = args.vocab_size or (tok.vocab_size if tok else None)
    tf = TokenFile(args.file, vocab)
    ids = tf.tokens
    print(f"file:     {tf.path}")
    print(f"tokens:   {tf.n_tokens:,} ({tf.path.stat().st_size:,} bytes, {tf.dtype.name} ids)")
    print(f"stories:  {tf.count(BOS_ID):,} (BOS=1)")
    print(f"split:    train {tf.split_index:,} / val {tf.n_tokens - tf.split_index:,}")
    if tf.n_tokens:
        print(f"max id:   {int(np.max(ids))}  distinct ids: {len(np.unique(ids)):,}")
        print(f"first 10: {' '.join(str(int(t)) for t in ids[:10])}")
    if tok is not None and tf.n_tokens:
        starts = np.flatnonzero(ids[: 1 << 16] == BOS_ID)
        end = int(starts[1]) if len(starts) > 1 else min(tf.n_tokens, 200)
        print(f"sample:   {tok.decode(ids[:end])[:500]}")
    return 0
