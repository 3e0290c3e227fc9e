"""The backend interface: every backend compiles the same MIL text + weights dict to a Kernel.

:meth:`Backend.compile` does the backend-independent part once (parse or print the program so
both text and IR exist, run the registry preflight for the chip and the backend's own op
set, snapshot the weights, check every BLOBFILE key, enforce the compile budget, count the
compile) and calls :meth:`Backend._compile` for the rest. A new backend implements ``name``,
:meth:`available` and :meth:`_compile` (and may narrow :meth:`supported_ops`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from anetrain.hardware.chips import ChipProfile, get_chip
from anetrain.memory import check_fits, program_bytes
from anetrain.mil.ir import Program
from anetrain.mil.parser import parse_program
from anetrain.mil.printer import print_program
from anetrain.mil.validate import check_structure
from anetrain.runtime.budget import CompileBudget
from anetrain.runtime.errors import WeightsError
from anetrain.runtime.kernel import DEFAULT_QOS, Kernel, check_qos
from anetrain.runtime.preflight import check_supported, enforce

Weights = Mapping[str, Any]  # "@model_path/weights/<file>.bin" -> MILBlob v2 file bytes


@dataclass(frozen=True)
class CompileSource:
    """Everything a backend needs to compile: both program forms and a private weights copy."""

    program: Program
    text: str
    weights: dict[str, bytes]
    name: str
    qos: int


class Backend(ABC):
    """A way to run MIL programs: ``sim`` (NumPy, anywhere) or ``ane`` (the Neural Engine)."""

    name: ClassVar[str]

    def __init__(
        self, chip: str | ChipProfile | None = None, *, compile_budget: int | None = None
    ) -> None:
        self.chip = get_chip(chip)
        limit = self.chip.compile_budget if compile_budget is None else compile_budget
        self.budget = CompileBudget(self.name, limit)

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """``(True, "")`` if usable here, else ``(False, reason)``; must not raise."""

    def supported_ops(self) -> set[str] | None:
        """Op types this backend can execute beyond the chip's rules (None: no extra limit)."""
        return None

    @property
    def compile_count(self) -> int:
        """Compiles this backend instance has done."""
        return self.budget.used

    @property
    def compile_budget(self) -> int:
        """Compiles this backend instance may do in all."""
        return self.budget.limit

    @compile_budget.setter
    def compile_budget(self, limit: int) -> None:
        self.budget.limit = limit

    def compile(
        self,
        program: Program | str,
        weights: Weights | None = None,
        *,
        qos: int = DEFAULT_QOS,
        name: str | None = None,
    ) -> Kernel:
        """Compile and load ``program`` (MIL text or IR) with ``weights``; counts against budget.

        Weight bytes are copied now: changing the dict or its buffers later has no effect,
        like the hardware, which bakes weights into the compiled program.
        """
        qos = check_qos(qos)
        self.budget.check()
        if isinstance(program, str):
            text, prog = program, parse_program(program)
        elif isinstance(program, Program):
            text, prog = print_program(program), program
        else:
            raise TypeError(f"compile() needs MIL text or a Program, got {type(program).__name__}")
        check_structure(prog)  # zero-size dimensions, unknown attributes
        # the same registry preflight for every backend, so a program the chip cannot run
        # fails here with our message rather than in the ANE compiler
        enforce(prog, self.chip, name or prog.main.name)
        check_supported(prog, self.supported_ops())
        check_fits(f"program '{name or prog.main.name}'", program_bytes(prog))
        snapshot = snapshot_weights(weights)
        check_weight_keys(prog, snapshot)
        source = CompileSource(prog, text, snapshot, name or prog.main.name, qos)
        kernel = self._compile(source)
        self.budget.record()
        return kernel

    @abstractmethod
    def _compile(self, source: CompileSource) -> Kernel:
        """Backend-specific compile + load."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} chip={self.chip.name}>"


def snapshot_weights(weights: Weights | None) -> dict[str, bytes]:
    """Copy a weights dict to immutable bytes (accepts bytes-like values)."""
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise WeightsError(f"weights must be a dict of path -> bytes, got {type(weights).__name__}")
    out: dict[str, bytes] = {}
    for key, value in weights.items():
        if not isinstance(key, str):
            raise WeightsError(f"weights keys must be BLOBFILE path strings, got {key!r}")
        try:
            out[key] = bytes(memoryview(value).cast("B"))
        except TypeError:
            raise WeightsError(
                f"weights[{key!r}] must be bytes-like (MILBlob v2 file contents), "
                f"got {type(value).__name__}"
            ) from None
    return out


def check_weight_keys(program: Program, weights: Mapping[str, bytes]) -> None:
    """Every BLOBFILE path must be a key of ``weights``; the error names the missing key."""
    for fn in program.functions.values():
        for op in fn.operations:
            for lit in op.attributes.values():
                ref = lit.blob
                if ref is None or ref.path in weights:
                    continue
                where = f" (line {op.line})" if op.line else ""
                hint = ""
                if ref.file_name in weights:
                    hint = f"; the dict has {ref.file_name!r}: use the full BLOBFILE path as key"
                known = ", ".join(repr(k) for k in weights) or "none"
                raise WeightsError(
                    f"const '{op.name}'{where} reads BLOBFILE {ref.path!r}, which is not a key "
                    f"of the weights dict (keys: {known}){hint}"
                )
