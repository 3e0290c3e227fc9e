"""Argument types shared by the subcommands: every value is checked when the line is parsed.

A bad value ends in one line naming the option, the value and what is allowed, before any
work starts (argparse reports an ``ArgumentTypeError`` as ``argument --lr: ...``).
"""

from __future__ import annotations

import argparse
import math
import re
import stat
from collections.abc import Callable
from pathlib import Path

SEED_MAX = 2**32 - 1  # NumPy's legacy seeding range; larger seeds are refused by NumPy


def count(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def number(
    minimum: float | None = None,
    *,
    above: float | None = None,
    maximum: float | None = None,
) -> Callable[[str], float]:
    """A finite float, at least ``minimum`` / strictly above ``above`` / at most ``maximum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {value:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be greater than {above:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


seed = count(0, SEED_MAX)
seed.__name__ = "seed"

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def byte_size(text: str) -> int:
    """``512M``, ``8G``, ``1.5GiB``, ``1000000``: a positive number of bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 8G, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return int(value)


byte_size.__name__ = "size"


def _file_in_the_way(path: Path) -> Path | None:
    """The existing file (``path`` itself or a parent) that keeps ``path`` from being a folder."""
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


_SPECIAL = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _refuse_special(path: Path, text: str, wanted: str) -> None:
    """Refuse a path that exists but is neither a regular file nor a folder: reading a FIFO
    blocks until a writer comes, and an atomic write would rename over a device."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing, or unreadable: the reader's message names the fix
        return
    kind = _SPECIAL.get(stat.S_IFMT(mode))
    if kind is not None:
        raise argparse.ArgumentTypeError(f"{text} is {kind}, not {wanted}; give {wanted}")


def file_path(text: str) -> Path:
    """A file to read or write: not empty, not an existing folder, FIFO or device, no file in
    the way of its folder (whether it exists is left to the reader, whose message names the
    fix)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path")
    _refuse_special(path, text, "a regular file")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{text} is inside {blocker}, which is a file")
    return path


file_path.__name__ = "file"


def _plain_path(text: str, noun: str, wanted: str) -> Path:
    """``text`` as a path: not empty (``noun`` names what was expected), not a FIFO or device
    (``wanted`` names what it should be)."""
    if not text:
        raise argparse.ArgumentTypeError(f"expected a {noun}, got an empty string")
    path = Path(text)
    _refuse_special(path, text, wanted)
    return path


def file_or_folder(text: str) -> Path:
    """An existing-or-not path to read that may be a file or a folder (a checkpoint or a run
    folder, a weights folder): not empty, not a FIFO or device."""
    return _plain_path(text, "path", "a regular file or a folder")


file_or_folder.__name__ = "path"


def model_path(text: str) -> str:
    """A model to read (a checkpoint, run folder, Hugging Face folder or llama2.c file) as the
    text given, refused at parse time if it is a FIFO or device (reading one would block)."""
    file_or_folder(text)
    return text


model_path.__name__ = "path"


def tokenizer_arg(text: str) -> str:
    """``builtin`` or a tokenizer file or folder (:func:`model_path`'s checks)."""
    return text if text == "builtin" else model_path(text)


tokenizer_arg.__name__ = "tokenizer"


def folder_path(text: str) -> Path:
    """A folder to read (a run folder): not empty, not a FIFO or device (whether it exists and
    is a folder is left to the reader, whose message names the fix)."""
    return _plain_path(text, "folder path", "a folder")


folder_path.__name__ = "folder"


def file_or_stdout(text: str) -> str:
    """``-`` (standard output) or a :func:`file_path`, kept as the text given."""
    if text != "-":
        file_path(text)
    return text


file_or_stdout.__name__ = "file"


def output_folder(text: str) -> Path:
    """A folder we will create or write into: not a file, and no file in the way."""
    path = _plain_path(text, "folder path", "a folder")
    blocker = _file_in_the_way(path)
    if blocker == path:
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder path")
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{text} is inside {blocker}, which is a file")
    return path


output_folder.__name__ = "folder"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``anetrain train: error: ...``), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        choices = self.subcommands()
        if choices and message.startswith("the following arguments are required"):
            message += f"; choose one of {', '.join(choices)}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def subcommands(self) -> list[str]:
        """The names of this parser's subcommands (empty when it has none)."""
        if self._subparsers is None:
            return []
        return [name for action in self._subparsers._group_actions for name in action.choices or {}]
