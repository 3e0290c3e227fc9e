"""The ane backend off the Mac: import safety, availability, chip mapping, and (with a fake
bridge standing in for PyObjC) the call sequence, retries, cleanup and error mapping.

The fake checks our side of the private-API sequence (seed-inventory §2); it says nothing about
whether the framework behaves as assumed. That needs ``ANE_HARDWARE_TESTS=1`` on a Mac.
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anetrain import runtime
from anetrain.mil import FP16, Builder
from anetrain.runtime import testing as T
from anetrain.runtime.ane import backend as ane_backend
from anetrain.runtime.ane.device import chip_from_brand, chip_from_subtype, detect_chip
from anetrain.runtime.ane.modeldir import MODEL_DIRS, ModelDirs, weight_files
from anetrain.runtime.ane.objc_bridge import AneCallError, describe_error, platform_problem

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

    runtime.reset_compile_count("ane")
    backend = AneBackend("m4")
    with pytest.raises(runtime.BackendUnavailable, match="macOS"):
        backend.compile(T.softmax_program(8, 16))
    assert runtime.compile_count("ane") == 0


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


class FakeNSError:
    def __init__(self, code: int, text: str) -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def domain(self) -> str:
        return "com.apple.appleneuralengine"

    def localizedDescription(self) -> str:
        return self._text

    def userInfo(self) -> dict:
        return {}


def test_describe_error() -> None:
    code, text = describe_error(FakeNSError(0x1D, "Program evaluation failed"))
    assert code == 0x1D and "0x1d" in text and "Program evaluation failed" in text
    assert describe_error(None) == (None, "no NSError was returned")


# ---- the call sequence, against a fake bridge ----------------------------------------------


@dataclasses.dataclass
class FakeRef:
    buf: bytearray
    locks: int = 0


@dataclasses.dataclass
class FakeRequest:
    inputs: tuple
    outputs: tuple
    stats: Any


@dataclasses.dataclass
class FakeStats:
    ns: int = 0


class FakeModel:
    def __init__(self, mil: bytes, weights: Mapping[str, bytes]) -> None:
        self.mil, self.weights = mil, weights
        self.loaded = False


class FakeBridge:
    """Records calls; evaluate copies the first input's bytes into the first output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []
        self.compile_error: AneCallError | None = None
        self.load_failures = 0
        self.eval_error: AneCallError | None = None
        self.fail_with_stats = False
        self.surface_error: AneCallError | None = None
        self.stats = True
        self.hw_ns = 1000
        self.refs: list[FakeRef] = []

    def descriptor(self, mil: bytes, weights: Mapping[str, bytes]) -> dict:
        self.calls.append("descriptor")
        assert weights is not None and isinstance(weights, Mapping)
        return {"mil": mil, "weights": dict(weights)}

    def model(self, descriptor: dict) -> FakeModel:
        self.calls.append("model")
        return FakeModel(descriptor["mil"], descriptor["weights"])

    def hex_identifier(self, model: FakeModel) -> str:
        self.calls.append("hex")
        return self._ident(model)

    @staticmethod
    def _ident(model: FakeModel) -> str:
        h = hashlib.sha256(model.mil)
        for key in sorted(model.weights):
            h.update(key.encode() + model.weights[key])
        return h.hexdigest()[:32]

    def temp_root(self) -> str:
        return str(self.root)

    def _folder(self, model: FakeModel) -> Path:
        return self.root / self._ident(model)

    def compile(self, model: FakeModel, qos: int) -> None:
        self.calls.append(f"compile:{qos}")
        folder = self._folder(model)
        assert (folder / "model.mil").read_bytes() == model.mil  # populated before compiling
        for key, blob in model.weights.items():
            assert (folder / key.removeprefix("@model_path/")).read_bytes() == blob
        if self.compile_error is not None:
            raise self.compile_error

    def load(self, model: FakeModel, qos: int) -> None:
        self.calls.append(f"load:{qos}")
        if self.load_failures:
            self.load_failures -= 1
            raise AneCallError("loadWithQoS:options:error:", 5, "busy")
        model.loaded = True

    def unload(self, model: FakeModel, qos: int) -> None:
        self.calls.append(f"unload:{qos}")
        model.loaded = False

    def evaluate(self, model: FakeModel, qos: int, request: FakeRequest) -> None:
        self.calls.append(f"evaluate:{qos}")
        assert model.loaded
        assert all(ref.locks == 0 for ref in self.refs)
        if self.eval_error is not None:
            raise self.eval_error
        if self.fail_with_stats and request.stats is not None:
            raise AneCallError("evaluateWithQoS:options:request:error:", 1, "bad perfStats")
        src, dst = request.inputs[0][1].buf, request.outputs[0][1].buf
        n = min(len(src), len(dst))
        dst[:n] = src[:n]
        if request.stats is not None:
            request.stats.ns = self.hw_ns

    def create_surface(self, nbytes: int) -> FakeRef:
        if self.surface_error is not None:
            raise self.surface_error
        ref = FakeRef(bytearray(nbytes))
        self.refs.append(ref)
        return ref

    def surface_memory(self, ref: FakeRef, nbytes: int) -> memoryview:
        assert ref.locks == 1
        return memoryview(ref.buf)[:nbytes]

    def lock(self, ref: FakeRef, read_only: bool) -> None:
        ref.locks += 1

    def unlock(self, ref: FakeRef, read_only: bool) -> None:
        assert ref.locks > 0
        ref.locks -= 1

    def wrap_surface(self, ref: FakeRef) -> tuple:
        return ("ANEIOSurfaceObject", ref)

    def make_request(self, inputs: Any, outputs: Any, stats: Any) -> FakeRequest:
        self.calls.append(f"request:{len(inputs)}:{len(outputs)}")
        return FakeRequest(tuple(inputs), tuple(outputs), stats)

    def new_perf_stats(self) -> FakeStats | None:
        return FakeStats() if self.stats else None

    def hw_time(self, stats: FakeStats) -> int:
        return stats.ns


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBridge:
    monkeypatch.setattr(ane_backend, "LOAD_RETRY_DELAY_S", 0.0)
    runtime.reset_compile_count("ane")
    return FakeBridge(tmp_path)


def _backend(fake: FakeBridge, chip: Any = "m4", **options: Any) -> ane_backend.AneBackend:
    return ane_backend.AneBackend(chip, bridge=fake, **options)


def test_sequence_compile_eval_unload_load(fake: FakeBridge) -> None:
    w = np.eye(16, dtype=np.float16)
    prog, weights = T.conv_program(w, 8)
    k = _backend(fake).compile(prog, weights, qos=17)
    assert fake.calls == ["descriptor", "model", "hex", "compile:17", "load:17"]
    assert runtime.compile_count("ane") == 1
    folder = k.folder
    assert folder is not None and folder.parent == fake.root
    assert (folder / "weights" / "weights.bin").read_bytes() == weights[next(iter(weights))]
    x = np.arange(16 * 8, dtype=np.float32).reshape(16, 8) / 8
    k.input.write(x)
    k.eval()
    assert np.array_equal(k.output.read(), x)  # the fake copies input bytes to the output
    assert fake.calls[-2:] == ["request:1:1", "evaluate:17"]
    assert k.stats.evals == 1 and k.stats.hw_ns == 1000
    fake.hw_ns = 1500
    k.eval(qos=0)
    assert fake.calls[-1] == "evaluate:0" and k.stats.hw_ns == 1500
    k.eval()  # an unchanged hwExecutionTime is taken as "not filled in"
    assert k.stats.hw_ns is None
    k.unload()
    assert fake.calls[-1] == "unload:17" and not folder.exists() and k.folder is None
    with pytest.raises(runtime.KernelUnloadedError):
        k.eval()
    k.load()
    assert fake.calls[-1] == "load:17" and folder.is_dir() and k.folder == folder
    assert runtime.compile_count("ane") == 1  # reloading is not a compile
    k.eval()
    k.unload()
    assert not folder.exists()
    assert all(ref.locks == 0 for ref in fake.refs)


def test_empty_weights_become_an_empty_dict(fake: FakeBridge) -> None:
    with _backend(fake).compile(T.softmax_program(8, 16)) as k:
        assert k.folder is not None and (k.folder / "weights").is_dir()


def test_load_is_retried_once(fake: FakeBridge) -> None:
    fake.load_failures = 1
    with _backend(fake).compile(T.softmax_program(8, 16)):
        assert [c for c in fake.calls if c.startswith("load")] == ["load:21", "load:21"]
    assert runtime.compile_count("ane") == 1


def test_second_load_failure_is_a_compile_error_with_no_state_left(fake: FakeBridge) -> None:
    fake.load_failures = 2
    with pytest.raises(runtime.CompileError, match="failed twice: busy"):
        _backend(fake).compile(T.softmax_program(8, 16))
    assert list(fake.root.iterdir()) == []
    assert runtime.compile_count("ane") == 0


def test_compile_failure_carries_the_nserror(fake: FakeBridge) -> None:
    _, text = describe_error(FakeNSError(3, "InvalidMILProgram"))
    fake.compile_error = AneCallError("compileWithQoS:options:error:", 3, text)
    with pytest.raises(runtime.CompileError, match="InvalidMILProgram"):
        _backend(fake).compile(T.softmax_program(8, 16))
    assert list(fake.root.iterdir()) == []
    assert runtime.compile_count("ane") == 0


def test_surface_failure_unloads_and_removes_the_folder(fake: FakeBridge) -> None:
    fake.surface_error = AneCallError("IOSurfaceCreate", None, "returned NULL")
    with pytest.raises(runtime.SurfaceError, match="IOSurface"):
        _backend(fake).compile(T.softmax_program(8, 16))
    assert fake.calls[-1] == "unload:21"
    assert list(fake.root.iterdir()) == []
    assert runtime.compile_count("ane") == 0


def test_reload_recompiles_when_the_program_is_gone(fake: FakeBridge) -> None:
    k = _backend(fake).compile(T.softmax_program(8, 16))
    k.unload()
    fake.load_failures = 2  # the compiled program lived in the removed folder
    k.load()
    assert fake.calls[-4:] == ["load:21", "load:21", "compile:21", "load:21"]
    assert runtime.compile_count("ane") == 2 and k.loaded
    k.unload()


def test_same_program_twice_shares_one_folder(fake: FakeBridge) -> None:
    backend = _backend(fake)
    k1 = backend.compile(T.softmax_program(8, 16))
    k2 = backend.compile(T.softmax_program(8, 16))
    assert k1.folder == k2.folder and k1.folder is not None
    assert MODEL_DIRS.refcount(k1.folder) == 2
    folder = k1.folder
    k1.unload()
    assert folder.is_dir()
    k2.unload()
    assert not folder.exists()


def test_request_reuse_shares_outputs(fake: FakeBridge) -> None:
    with _backend(fake).compile(T.softmax_program(8, 16)) as k:
        xs = [np.full((8, 16), i, np.float32) for i in range(3)]
        surfaces = [k.new_surface() for _ in xs]
        for s, x in zip(surfaces, xs, strict=True):
            s.write(x)
        requests = [k.request(s) for s in surfaces]
        for x, r in zip(xs, requests, strict=True):
            r.eval()
            assert r.outputs[0] is k.output
            assert np.array_equal(k.output.read(), x)


def test_foreign_surfaces_are_rejected(fake: FakeBridge) -> None:
    with _backend(fake).compile(T.softmax_program(8, 16)) as k:
        plain = runtime.Surface(k.input.shape, FP16)
        with pytest.raises(runtime.SurfaceError, match="new_surface"):
            k.request(plain)


def _two_input_program() -> Any:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 4, 1, 8])
    y = b.input("y", FP16, [1, 4, 1, 8])
    b.returns(b.add(x, y, name="z"))
    return b.program()


def test_multi_input_is_refused_before_the_ane(fake: FakeBridge) -> None:
    with _backend(fake).compile(_two_input_program()) as k:
        with pytest.raises(runtime.MultiInputError, match="0x1d"):
            k.eval()
        assert not any(c.startswith("evaluate") for c in fake.calls)


def test_status_0x1d_maps_to_multi_input_error(fake: FakeBridge) -> None:
    chip = dataclasses.replace(runtime.get_chip("m4"), multi_input_allowed=True)
    fake.eval_error = AneCallError("evaluateWithQoS:options:request:error:", 0x1D, "status 0x1d")
    k = _backend(fake, chip).compile(_two_input_program())
    with pytest.raises(runtime.MultiInputError, match="use one input surface"):
        k.eval()
    k.unload()


def test_eval_failure_is_an_eval_error(fake: FakeBridge) -> None:
    fake.eval_error = AneCallError("evaluateWithQoS:options:request:error:", 7, "timeout")
    with _backend(fake, perf_stats=False).compile(T.softmax_program(8, 16)) as k:
        with pytest.raises(runtime.EvalError, match="timeout"):
            k.eval()
        assert k.stats.evals == 0


def test_perf_stats_are_dropped_if_the_ane_rejects_them(fake: FakeBridge) -> None:
    fake.fail_with_stats = True
    with _backend(fake).compile(T.softmax_program(8, 16)) as k:
        k.eval()
        assert k.stats.hw_ns is None and k.stats.evals == 1
        k.request(k.new_surface()).eval()
        assert k.stats.hw_ns is None


def test_no_perf_stats_class_means_no_hw_ns(fake: FakeBridge) -> None:
    fake.stats = False
    with _backend(fake).compile(T.softmax_program(8, 16)) as k:
        k.eval()
        assert k.stats.hw_ns is None and k.stats.wall_ns is not None


def test_budget_is_enforced_through_the_base_class(fake: FakeBridge) -> None:
    backend = _backend(fake, compile_budget=1)
    k = backend.compile(T.softmax_program(8, 16))
    with pytest.raises(runtime.CompileBudgetExceeded):
        backend.compile(T.softmax_program(8, 16))
    assert fake.calls.count("compile:21") == 1
    k.unload()
