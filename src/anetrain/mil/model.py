"""A MIL program together with its weight files: the unit the ANE compiler takes.

``weights`` maps BLOBFILE paths (``@model_path/weights/x.bin``) to MILBlob file bytes, the
same dictionary the in-memory ANE compile receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anetrain.fsutil import atomic_write
from anetrain.mil.ir import Program
from anetrain.mil.parser import parse_program
from anetrain.mil.printer import print_program

MODEL_PATH = "@model_path/"


@dataclass
class MILModel:
    program: Program
    weights: dict[str, bytes] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return print_program(self.program)

    def save(self, directory: str | Path, name: str = "model.mil") -> Path:
        """Write ``name`` and ``weights/*.bin`` under ``directory`` (each file atomically)."""
        root = Path(directory)
        for key, data in self.weights.items():
            if not key.startswith(MODEL_PATH):
                raise ValueError(f"weight key {key!r} must start with {MODEL_PATH!r}")
            atomic_write(root / key[len(MODEL_PATH) :], data)
        path = root / name
        atomic_write(path, self.text.encode())
        return path

    @classmethod
    def load(cls, mil_path: str | Path) -> MILModel:
        """Read a ``.mil`` file and every weight file it references, relative to its folder."""
        path = Path(mil_path)
        program = parse_program(path.read_text())
        weights = {}
        for ref in program.main.blob_refs():
            if ref.path not in weights:
                weights[ref.path] = (path.parent / ref.file_name).read_bytes()
        return cls(program, weights)
