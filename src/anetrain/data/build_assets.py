"""Regenerate the shipped data assets: ``python -m anetrain.data.build_assets [--out DIR]``.

Deterministic: the built-in tokenizer is trained on the default-seed story corpus, so rebuilding
gives byte-identical files (a test checks the shipped asset against a rebuild).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from anetrain.data.corpus import ASSET_DIR, BUILTIN_TOKENIZER_NAME, train_builtin_tokenizer


def build(out_dir: Path = ASSET_DIR) -> list[Path]:
    """Write every asset into ``out_dir``; returns the paths written."""
    path = out_dir / BUILTIN_TOKENIZER_NAME
    train_builtin_tokenizer().save(path)
    return [path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anetrain.data.build_assets")
    parser.add_argument("--out", type=Path, default=ASSET_DIR, help="output directory")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for path in build(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)
    print(f"done in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
