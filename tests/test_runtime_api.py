"""Runtime API: backend registry, surfaces, requests, budget and error messages."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.mil import FP16, FP32, INT8, Builder
from anetrain.runtime import testing as T
from anetrain.runtime.backend import Backend, CompileSource
from anetrain.runtime.kernel import Kernel, Request

# ---- registry ------------------------------------------------------------------------------


def test_import_does_not_load_pyobjc_or_the_ane_backend() -> None:
    code = (
        "import sys, anetrain, anetrain.runtime as r\n"
        "r.get_backend('auto')\n"
        "bad = [m for m in sys.modules if m.startswith(('objc', 'Foundation', "
        "'anetrain.runtime.ane'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    if sys.platform != "darwin":
        assert out.stdout.strip() == "[]"


def test_get_backend_sim_and_auto() -> None:
    sim = runtime.get_backend("sim", "m2")
    assert sim.name == "sim" and sim.chip.name == "m2" and sim.compile_budget == 119
    assert runtime.get_backend("sim").chip.name == "m4"
    if sys.platform != "darwin":
        assert runtime.get_backend("auto").name == "sim"
        ok, reason = runtime.backend_status("ane")
        assert not ok and "macOS" in reason
        with pytest.raises(runtime.BackendUnavailable, match="needs macOS"):
            runtime.get_backend("ane")
    with pytest.raises(runtime.BackendUnavailable, match=r"unknown backend 'tpu'.*sim, ane, auto"):
        runtime.get_backend("tpu")


class EchoBackend(Backend):
    """A minimal third-party backend: copies input to output."""

    name = "echo"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def _compile(self, source: CompileSource) -> Kernel:
        from anetrain.runtime.surface import TensorSpec

        fn = source.program.main
        specs = [TensorSpec(v.name, v.dtype, v.shape) for v in fn.inputs]
        return EchoKernel(
            name=source.name,
            backend=self.name,
            chip=self.chip,
            input_specs=specs,
            output_specs=specs,
            qos=source.qos,
            mil_text=source.text,
        )


class EchoKernel(Kernel):
    def _evaluate(self, request: Request, qos: int) -> int | None:
        request.outputs[0].copy_from(request.inputs[0])
        return 1234


def test_register_backend_and_backend_instance() -> None:
    runtime.register_backend("echo", f"{__name__}:EchoBackend")
    k = runtime.compile(T.softmax_program(4, 4), backend="echo")
    assert np.array_equal(k(np.full((4, 4), 2.0, np.float32)), np.full((1, 4, 1, 4), 2.0))
    assert k.stats.hw_ns == 1234
    echo = EchoBackend("m1")
    k2 = runtime.compile(T.softmax_program(4, 4, "ios16"), backend=echo)
    assert k2.chip.name == "m1" and echo.compile_count == 1
    # the registry preflight runs in the shared compile path, so any backend gets it
    with pytest.raises(runtime.UnsupportedOpError, match=r"\[dialect-program-version\]"):
        runtime.compile(T.softmax_program(4, 4), backend=EchoBackend("m1"))
    with pytest.raises(TypeError, match="Backend constructor"):
        runtime.compile(T.softmax_program(4, 4), backend=EchoBackend(), chip="m2")
    with pytest.raises(ValueError, match="module:attribute"):
        runtime.register_backend("bad", "no_colon")


def test_error_hierarchy() -> None:
    for cls in (
        runtime.CompileBudgetExceeded,
        runtime.UnsupportedOpError,
        runtime.WeightsError,
        runtime.MultiInputError,
        runtime.KernelUnloadedError,
        runtime.SurfaceError,
        runtime.BackendUnavailable,
    ):
        assert issubclass(cls, runtime.AneRuntimeError) and issubclass(cls, AnetrainError)
    # chip data errors come from the hardware package, still one-line user errors
    assert issubclass(runtime.UnknownChipError, AnetrainError)
    assert issubclass(runtime.ChipProfileError, AnetrainError)
    assert issubclass(runtime.CompileBudgetExceeded, runtime.CompileError)


# ---- compile-time errors -------------------------------------------------------------------


def test_missing_weight_key_is_named() -> None:
    prog, weights = T.conv_program(np.eye(4, dtype=np.float16), 4)
    with pytest.raises(
        runtime.WeightsError, match=r"'@model_path/weights/weights\.bin'.*keys: none"
    ):
        runtime.compile(prog, {}, backend="sim")
    short = {"weights/weights.bin": next(iter(weights.values()))}
    with pytest.raises(runtime.WeightsError, match="use the full BLOBFILE path"):
        runtime.compile(prog, short, backend="sim")
    with pytest.raises(runtime.WeightsError, match="bytes-like"):
        runtime.compile(prog, {next(iter(weights)): 3.0}, backend="sim")


def test_bad_weight_file_and_offset() -> None:
    prog, weights = T.conv_program(np.eye(4, dtype=np.float16), 4)
    key = next(iter(weights))
    with pytest.raises(runtime.WeightsError, match=r"weights\['@model_path.*shorter than"):
        runtime.compile(prog, {key: b"xx"}, backend="sim")
    prog2, _ = T.conv_program(np.eye(8, dtype=np.float16), 4)  # needs 128 bytes, blob has 32
    with pytest.raises(runtime.WeightsError, match=r"const 'W'.*shape"):
        runtime.compile(prog2, weights, backend="sim")


def test_qos_is_validated() -> None:
    prog = T.softmax_program(4, 4)
    with pytest.raises(ValueError, match=r"0..63"):
        runtime.compile(prog, backend="sim", qos=64)
    k = runtime.compile(prog, backend="sim")
    assert k.qos == runtime.DEFAULT_QOS == 21
    with pytest.raises(ValueError, match=r"0..63"):
        k.eval(qos=-1)


def test_budget_counts_per_backend_instance() -> None:
    sim = runtime.get_backend("sim", compile_budget=3)
    prog = T.softmax_program(4, 4)
    for _ in range(3):
        sim.compile(prog)
    assert sim.compile_count == 3
    with pytest.raises(
        runtime.CompileBudgetExceeded, match=r"3 of 3 compiles.*new process"
    ) as info:
        sim.compile(prog)
    assert (info.value.used, info.value.budget) == (3, 3)
    assert sim.compile_count == 3  # a refused compile is not counted
    other = runtime.get_backend("sim", compile_budget=1)  # its own budget, nothing to reset
    other.compile(prog)
    assert (other.compile_count, sim.compile_count) == (1, 3)
    sim.compile_budget = 4  # the limit can be raised on the instance
    sim.compile(prog)


def test_compile_rejects_non_programs() -> None:
    with pytest.raises(TypeError, match="MIL text or a Program"):
        runtime.compile(42, backend="sim")  # type: ignore[arg-type]
    with pytest.raises(AnetrainError):
        runtime.compile("program(1.3) {", backend="sim")


# ---- eval-time behaviour -------------------------------------------------------------------


def _two_input_program() -> Builder:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 4, 1, 8])
    y = b.input("y", FP16, [1, 4, 1, 8])
    b.returns(b.add(x, y))
    return b.program()


def test_multi_input_request_fails_like_0x1d() -> None:
    k = runtime.compile(_two_input_program(), backend="sim")
    with pytest.raises(runtime.MultiInputError, match=r"0x1d.*2 input surfaces") as info:
        k.eval()
    assert info.value.status == 0x1D
    k_ok = runtime.compile(
        _two_input_program(),
        backend="sim",
        chip=dataclasses.replace(runtime.get_chip("m4"), multi_input_allowed=True),
    )
    out = k_ok(np.ones((4, 8), np.float32), np.ones((4, 8), np.float32))
    assert np.all(out == 2)


def test_request_checks_surfaces() -> None:
    k = runtime.compile(T.softmax_program(4, 8), backend="sim")
    with pytest.raises(runtime.SurfaceError, match=r"input 'x' is fp16\[1, 4, 1, 8\], got surface"):
        k.request(runtime.Surface([1, 4, 1, 16]))
    with pytest.raises(runtime.SurfaceError, match="has 1 input"):
        k.request(k.new_surface(), k.new_surface())
    other = runtime.compile(T.softmax_program(4, 8), backend="sim")
    with pytest.raises(runtime.SurfaceError, match="different kernel"):
        k._run(other.request(), None)
    own = k.request(outputs=[runtime.Surface([1, 4, 1, 8], name="mine")])
    k.input.write(np.zeros((4, 8), np.float32))
    own.eval()
    assert np.allclose(own.outputs[0].read(), 0.25)
    assert np.all(k.output.read() == 0)  # the kernel's own output was not touched


def test_fp32_surfaces() -> None:
    b = Builder("ios18")
    x = b.input("x", FP32, [1, 2, 1, 3])
    b.returns(b.mul(x, np.float32(1.0 + 2**-20)))
    k = runtime.compile(b.program(), backend="sim")
    assert k.input.dtype is FP32 and k.output.nbytes == 24
    out = k(np.ones((2, 3), np.float32))
    assert np.all(out == np.float32(1.0 + 2**-20))


# ---- surfaces ------------------------------------------------------------------------------


def test_surface_views_and_channel_helpers() -> None:
    s = runtime.Surface([1, 6, 1, 4], FP16, name="act")
    assert (s.channels, s.spatial, s.nbytes) == (6, 4, 48)
    assert s.buffer.dtype == np.uint8 and s.buffer.size == 48
    data = np.arange(8, dtype=np.float32).reshape(2, 4) + 0.1
    runtime.io_write_fp16_at(s, 3, data)
    assert np.array_equal(s.read(3, 2), data.astype(np.float16).astype(np.float32))
    assert np.all(s.read(0, 3) == 0)
    assert s.array.shape == (1, 6, 1, 4) and s.array.dtype == np.float16
    assert np.shares_memory(s.array, s.buffer) and np.shares_memory(s.rows, s.buffer)
    s.rows[0, 0] = 7
    assert s.read(0, 1)[0, 0] == 7
    assert np.array_equal(runtime.io_read_fp16(s, 3, 2), s.read(3, 2))
    s.write(np.full((1, 6, 1, 4), 70000.0, np.float32))
    assert np.all(np.isinf(s.numpy()))
    s.fill(1.5)
    assert np.all(s.numpy() == 1.5)


def test_io_copy_between_surfaces() -> None:
    a = runtime.Surface([1, 4, 1, 3])
    b = runtime.Surface([1, 6, 1, 3])
    a.write(np.arange(12, dtype=np.float32))
    runtime.io_copy(b, 2, a, 1, 3)
    assert np.array_equal(b.read(2, 3), a.read(1, 3))
    assert np.all(b.read(0, 2) == 0) and np.all(b.read(5, 1) == 0)
    with pytest.raises(runtime.SurfaceError, match="same dtype and spatial"):
        runtime.io_copy(b, 0, runtime.Surface([1, 4, 1, 3], FP32), 0, 1)


def test_surface_errors() -> None:
    s = runtime.Surface([1, 4, 1, 8])
    with pytest.raises(runtime.SurfaceError, match=r"channels \[3, 5\) out of range.*4 channels"):
        s.read(3, 2)
    with pytest.raises(runtime.SurfaceError, match="whole number of channels"):
        s.write(np.zeros(5, np.float32))
    with pytest.raises(runtime.SurfaceError, match="fp16 or fp32"):
        runtime.Surface([1, 4, 1, 8], INT8)
    with pytest.raises(runtime.SurfaceError, match="too small"):
        runtime.Surface([1, 4, 1, 8], buffer=bytearray(10))


def test_surface_over_external_buffer_with_lock() -> None:
    events: list[str] = []

    class Lock:
        def __init__(self, read_only: bool) -> None:
            self.read_only = read_only

        def __enter__(self) -> None:
            events.append("lock-ro" if self.read_only else "lock")

        def __exit__(self, *exc: object) -> None:
            events.append("unlock")

    raw = bytearray(64)
    s = runtime.Surface([1, 2, 1, 8], buffer=raw, lock=Lock)
    s.write(np.ones((2, 8), np.float32))
    assert raw[:2] == np.float16(1).tobytes()
    assert s.read().sum() == 16
    assert events == ["lock", "unlock", "lock-ro", "unlock"]


def test_conv_chain_benchmark_runs() -> None:
    """The performance bar's script stays runnable (tiny sizes; the real figure is in docs)."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "conv_chain.py"
    args = ["--depth", "3", "--channels", "16", "--spatial", "8", "--samples", "3", "--json"]
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["depth"] == 3 and result["ratio"] > 0


def test_sim_default_surfaces_keep_their_values_across_other_requests() -> None:
    """The sim's own input/output surfaces hold its plan's buffers; requests with other surfaces
    must still leave them as they were (as the hardware's separate IOSurfaces would)."""
    from anetrain.runtime.testing import conv_program

    w = np.eye(4, dtype=np.float32) * 3
    k = runtime.compile(*conv_program(w, 8), backend="sim")
    a = np.full((4, 8), 0.5, np.float32)
    b = np.full((4, 8), 2.0, np.float32)
    k.input.write(a)
    k.eval()
    other_in, other_out = k.new_surface(), k.new_surface(k.output_specs[0])
    other_in.write(b)
    for _ in range(2):
        k.request(other_in, outputs=[other_out]).eval()
        assert np.array_equal(other_out.read(), 3 * b)
        assert np.array_equal(k.input.read(), a) and np.array_equal(k.output.read(), 3 * a)
        k.request(other_in).eval()  # other input, the kernel's own output
        assert np.array_equal(k.output.read(), 3 * b) and np.array_equal(k.input.read(), a)
        k.eval()
        assert np.array_equal(k.output.read(), 3 * a)
