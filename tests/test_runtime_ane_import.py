"""The ane backend off the Mac: import safety, availability, chip mapping, the model folder.

The call sequence, retries, cleanup and error mapping are checked through the real bridge in
tests/test_ane_binding_conformance.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from anetrain import runtime
from anetrain.runtime import testing as T
from anetrain.runtime.ane.device import (
    chip_from_brand,
    chip_from_subtype,
    detect_chip,
    macos_major,
)
from anetrain.runtime.ane.modeldir import ModelDirs, weight_files
from anetrain.runtime.ane.objc_bridge import platform_problem

OFF_MAC = pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS behaviour")
PYOBJC = ("objc", "Foundation", "IOSurface", "AppKit", "CoreFoundation", "PyObjCTools")


# ---- import safety and availability ----------------------------------------------------------


def _modules_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys\nprint([m for m in sys.modules if m.split('.')[0] in {PYOBJC!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_importing_anetrain_and_runtime_does_not_import_pyobjc() -> None:
    assert _modules_after("import anetrain, anetrain.runtime, anetrain.runtime.registry") == []


def test_importing_the_ane_backend_and_doctor_does_not_import_pyobjc() -> None:
    code = "import anetrain.runtime.ane, anetrain.commands.doctor, anetrain.cli"
    assert _modules_after(code) == []


@OFF_MAC
def test_ane_package_imports_and_is_unavailable_here() -> None:
    from anetrain.runtime.ane import AneBackend

    assert issubclass(AneBackend, runtime.Backend) and AneBackend.name == "ane"
    ok, reason = AneBackend.available()
    assert ok is False
    assert "macOS" in reason and sys.platform in reason
    assert platform_problem() == reason
    code = "from anetrain.runtime.ane import AneBackend\nAneBackend.available()"
    assert _modules_after(code) == []


@OFF_MAC
def test_get_backend_ane_raises_and_auto_is_sim() -> None:
    with pytest.raises(runtime.BackendUnavailable, match=r"needs macOS.*backend='sim'"):
        runtime.get_backend("ane")
    ok, reason = runtime.backend_status("ane")
    assert not ok and "macOS" in reason
    assert runtime.get_backend("auto").name == "sim"


@OFF_MAC
def test_compiling_without_the_framework_fails_cleanly() -> None:
    from anetrain.runtime.ane import AneBackend

    backend = AneBackend("m4")
    with pytest.raises(runtime.BackendUnavailable, match="macOS"):
        backend.compile(T.softmax_program(8, 16))
    assert backend.compile_count == 0


@OFF_MAC
def test_detect_chip_off_macos_finds_nothing() -> None:
    found = detect_chip()
    assert found.chip is None and "not macOS" in found.source
    from anetrain.runtime.ane import AneBackend

    assert AneBackend().chip.name == runtime.DEFAULT_CHIP


# ---- chip mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand", "chip"),
    [
        ("Apple M4 Max", "m4max"),
        ("Apple M1", "m1"),
        ("Apple M2 Pro", "m2pro"),
        ("Apple M3 Ultra", "m3ultra"),
        ("Apple M5", "m5"),
        ("Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz", None),
        ("", None),
        (None, None),
    ],
)
def test_chip_from_brand(brand: str | None, chip: str | None) -> None:
    assert chip_from_brand(brand) == chip


@pytest.mark.parametrize(
    ("subtype", "chip"),
    [("h13", "m1"), ("H14G", "m2"), ("h15", "m3"), ("h16", "m4"), ("h17", "m5"), ("h99", None)],
)
def test_chip_from_subtype(subtype: str, chip: str | None) -> None:
    assert chip_from_subtype(subtype) == chip


@pytest.mark.parametrize(
    ("release", "major"),
    [("15.6.1", "15"), ("26.2", "26"), ("14.0", "14"), ("27.0", None), ("", None), (None, None)],
)
def test_macos_major_selects_the_profile_version(release: str | None, major: str | None) -> None:
    """The ane backend picks the profile for this Mac's macOS (the dialect depends on it)."""
    assert macos_major(release) == major


# ---- model folder and errors ---------------------------------------------------------------


def test_weight_files_map_model_path_keys_and_reject_escapes() -> None:
    files = weight_files({"@model_path/weights/a.bin": b"A", "other": b"B"})
    assert files == {"weights/a.bin": b"A"}
    for bad in ("@model_path/../x.bin", "@model_path//etc/x", "@model_path/model.mil"):
        with pytest.raises(runtime.WeightsError, match="model folder"):
            weight_files({bad: b""})


def test_model_dirs_are_shared_and_removed_with_the_last_reference(tmp_path: Path) -> None:
    dirs = ModelDirs()
    files = {"weights/w.bin": b"\x01\x02"}
    a = dirs.acquire(tmp_path, "abc123", b"program", files)
    b = dirs.acquire(tmp_path, "abc123", b"program", files)
    assert a == b == tmp_path / "abc123" and dirs.refcount(a) == 2
    assert (a / "model.mil").read_bytes() == b"program"
    assert (a / "weights" / "w.bin").read_bytes() == b"\x01\x02"
    dirs.release(a)
    assert a.is_dir()
    dirs.release(b)
    assert not a.exists() and dirs.refcount(a) == 0
    with pytest.raises(runtime.CompileError, match="identifier"):
        dirs.acquire(tmp_path, "../evil", b"", {})


def test_model_dirs_know_whose_bytes_they_hold(tmp_path: Path) -> None:
    dirs = ModelDirs()
    a = dirs.acquire(tmp_path, "same", b"text", {"weights/w.bin": b"A"})
    b = dirs.acquire(tmp_path, "same", b"text", {"weights/w.bin": b"B"})
    assert a == b and (a / "weights" / "w.bin").read_bytes() == b"B"
    assert dirs.ensure(a, b"text", {"weights/w.bin": b"B"}) is False  # already holds B
    assert dirs.ensure(a, b"text", {"weights/w.bin": b"A"}) is True  # rewritten for A
    assert (a / "weights" / "w.bin").read_bytes() == b"A"
    dirs.release(a)
    dirs.release(b)
    assert not a.exists()
