"""Incremental reading of a JSON-lines file that another process is appending to."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlTail:
    """Reads the complete lines added to ``path`` since the last :meth:`read`.

    The byte offset of the first unread line is remembered. A last line without its newline is
    left for the next read (the writer may be half-way through it). If the file shrinks or is
    replaced (a new run truncates it, ``--resume`` rewrites it), reading starts over and
    :meth:`read` reports ``reset=True`` so the caller can drop what it had.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.malformed = 0
        self.pending = 0  # bytes of an unfinished last line
        self._inode: int | None = None

    def restart(self) -> None:
        """Forget everything read so far; the next :meth:`read` starts at byte 0."""
        self.offset = 0
        self.malformed = 0
        self.pending = 0
        self._inode = None

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """The new complete records (JSON objects) and whether the file started over."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            reset = self.offset > 0
            self.restart()
            return [], reset
        reset = False
        if (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset:
            self.restart()
            reset = True
        self._inode = st.st_ino
        if st.st_size == self.offset:
            self.pending = 0
            return [], reset
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # 0 when there is no complete line yet
        self.offset += end
        self.pending = len(chunk) - end
        records = []
        for line in chunk[:end].splitlines():
            if not line.strip():
                continue
            record = _parse(line)
            if record is None:
                self.malformed += 1
            else:
                records.append(record)
        return records, reset


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)  # Python's json also accepts NaN / Infinity tokens
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
