"""Atomic file writes: readers and crashed runs see the old file or the new one, never half.

Data goes to a temporary file in the destination folder, is fsync'ed, then renamed over the
target (``os.replace`` is atomic on POSIX and Windows), and the folder is fsync'ed so the
rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

# ``.<name>.<32 hex>.tmp``: the temporary files atomic_writer makes (and nothing else's)
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


def temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (ours by name only).

    Call it when a process takes a folder over (a run starting or resuming): a writer that
    was killed between creating its temp file and renaming it never cleans up after itself.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only if the ``with`` block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        # 0o666 lets the umask decide permissions, as a plain open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> Path:
    """Write ``data`` (bytes, or an iterable of byte chunks) to ``path`` atomically."""
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    with atomic_writer(path) as handle:
        for chunk in chunks:
            handle.write(chunk)
    return Path(path)


def fsync_dir(directory: Path) -> None:
    """Persist a rename; best effort because not every OS/filesystem allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
