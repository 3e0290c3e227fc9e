"""The folder the ANE compiler reads: ``NSTemporaryDirectory()/<hexStringIdentifier>``.

Every call site in the original writes ``model.mil`` and each weight file there before
compiling, and the compiler leaves its artefacts there for ``loadWithQoS`` to use again after an
unload. ``hexStringIdentifier`` depends only on the MIL text and the weight *keys*, not on the
weight bytes, so two kernels with the same text and different weights are given the same
folder. Folders are therefore reference-counted (removed when the last kernel using one is
finalized, or at process exit) and remember whose files they hold: a kernel about to compile or
load into a folder holding another program's bytes rewrites them first (and must compile again,
since the artefacts there are the other program's).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from anetrain.runtime.errors import CompileError, WeightsError

MODEL_PATH_PREFIX = "@model_path/"
MIL_FILE = "model.mil"
_SAFE_ID = re.compile(r"^[0-9A-Za-z_.\-]+$")


def weight_files(weights: Mapping[str, bytes]) -> dict[str, bytes]:
    """Weight files to write, by path relative to the model folder.

    ``"@model_path/weights/w.bin"`` is written to ``weights/w.bin``. Keys without the prefix are
    passed to the descriptor only (no BLOBFILE can name them); keys that would escape the folder
    are rejected.
    """
    files: dict[str, bytes] = {}
    for key, blob in weights.items():
        if not key.startswith(MODEL_PATH_PREFIX):
            continue
        rel = PurePosixPath(key[len(MODEL_PATH_PREFIX) :])
        if not rel.parts or rel.is_absolute() or ".." in rel.parts or str(rel) == MIL_FILE:
            raise WeightsError(
                f"weights key {key!r} does not name a file inside the model folder; use "
                "'@model_path/weights/<file>.bin'"
            )
        files[str(rel)] = blob
    return files


def contents_digest(mil: bytes, files: Mapping[str, bytes]) -> str:
    """Identifies a folder's inputs, bytes included (unlike ``hexStringIdentifier``)."""
    h = hashlib.sha256(mil)
    for rel in sorted(files):
        h.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return h.hexdigest()


class ModelDirs:
    """Reference-counted model folders that know which program's files they hold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[Path, int] = {}
        self._holds: dict[Path, str] = {}

    def acquire(self, root: str | Path, ident: str, mil: bytes, files: Mapping[str, bytes]) -> Path:
        """Create (or share) ``root/ident`` holding ``model.mil`` and these weight files."""
        if not _SAFE_ID.match(ident) or ident in (".", ".."):
            raise CompileError(f"unexpected model identifier {ident!r} from hexStringIdentifier")
        path = Path(root) / ident
        with self._lock:
            self._ensure_locked(path, mil, files)
            self._refs[path] = self._refs.get(path, 0) + 1
        return path

    def ensure(self, path: Path, mil: bytes, files: Mapping[str, bytes]) -> bool:
        """Make ``path`` hold this program's files; True if it held another's (or none), so
        whatever the compiler left there is not this program's and it must be compiled again."""
        with self._lock:
            return self._ensure_locked(path, mil, files)

    def _ensure_locked(self, path: Path, mil: bytes, files: Mapping[str, bytes]) -> bool:
        digest = contents_digest(mil, files)
        if self._holds.get(path) == digest and (path / MIL_FILE).is_file():
            return False
        try:
            _populate(path, mil, files)
        except OSError as err:
            raise CompileError(f"cannot write the model folder {path}: {err}") from err
        self._holds[path] = digest
        return True

    def release(self, path: Path) -> None:
        """Drop one reference; the last one removes the folder."""
        with self._lock:
            count = self._refs.get(path, 0) - 1
            if count > 0:
                self._refs[path] = count
                return
            self._refs.pop(path, None)
            self._holds.pop(path, None)
            shutil.rmtree(path, ignore_errors=True)

    def refcount(self, path: Path) -> int:
        with self._lock:
            return self._refs.get(path, 0)


def _populate(path: Path, mil: bytes, files: Mapping[str, bytes]) -> None:
    (path / "weights").mkdir(parents=True, exist_ok=True)
    (path / MIL_FILE).write_bytes(mil)
    for rel, blob in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)


MODEL_DIRS = ModelDirs()
