"""Binding conformance of the ane backend, on any machine.

The real bridge and backend (``anetrain.runtime.ane``) run against the stand-in ``objc``,
``Foundation`` and ``IOSurface`` modules of ``tests/ane_standins.py``, which enforce PyObjC's
rules and the hardware facts reported by the public ANE projects (see docs/runtime.md). These
are not hardware tests: they check that our side follows the rules, and a Mac still has the last
word (``anetrain doctor --selftest``, ``ANE_HARDWARE_TESTS=1``).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ane_standins import (
    STATUS_0X1D,
    AneWorld,
    ConformanceViolation,
    NSArray,
    NSErrorStandIn,
    PerfStats,
)
from anetrain import runtime
from anetrain.mil import FP16, Builder
from anetrain.runtime import testing as T
from anetrain.runtime.ane import backend as ane_backend
from anetrain.runtime.ane import selectors as sels
from anetrain.runtime.ane.iosurface import PAGE_BYTES
from anetrain.runtime.ane.objc_bridge import REQUEST_SELECTOR, AneCallError, describe_error


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AneWorld:
    monkeypatch.setattr(ane_backend, "LOAD_RETRY_DELAY_S", 0.0)
    return AneWorld(tmp_path)


def backend(world: AneWorld, chip: Any = "m4", **options: Any) -> ane_backend.AneBackend:
    b = ane_backend.AneBackend(chip, bridge=world.bridge(), **options)
    world.__dict__.setdefault("backends", []).append(b)
    return b


def ane_compiles(world: AneWorld) -> int:
    """Compiles counted by every backend this test made (each has its own budget)."""
    return sum(b.compile_count for b in world.__dict__.get("backends", []))


def softmax() -> Any:
    return T.softmax_program(8, 16)


# ---- the selector table and PyObjC metadata -----------------------------------------------


def test_selector_table_is_consistent_and_sourced() -> None:
    data = json.loads((Path(sels.__file__).parent / "selectors.json").read_text(encoding="utf-8"))
    table = sels.selectors()
    assert len(table) >= 12
    for sel in table:
        assert sel.selector.count(":") == len(sel.args), sel
        for key in sel.source.split(", "):
            assert key in data["sources"], (sel.selector, key)
    kinds = {k for s in table for k in s.args}
    assert kinds <= {
        "uint32",
        "uint64",
        "object",
        "NSData",
        "NSDictionary",
        "NSArray",
        "NSNumber",
        "IOSurfaceRef",
        sels.ERROR_OUT,
    }
    assert set(sels.required_classes()) == {
        "_ANEInMemoryModelDescriptor",
        "_ANEInMemoryModel",
        "_ANERequest",
        "_ANEIOSurfaceObject",
    }


def test_out_parameter_metadata_is_registered_at_the_error_index(world: AneWorld) -> None:
    world.bridge()
    # PyObjC counts self and _cmd: the first visible argument is index 2
    want = {
        "compileWithQoS:options:error:": 4,
        "loadWithQoS:options:error:": 4,
        "evaluateWithQoS:options:request:error:": 5,
        "unloadWithQoS:error:": 3,
    }
    got = {
        sel: next(iter(meta["arguments"]))
        for (cls, sel), meta in world.metadata.items()
        if cls == "_ANEInMemoryModel"
    }
    assert got == want
    for meta in world.metadata.values():
        assert all(a == {"type_modifier": b"o"} for a in meta["arguments"].values())


def test_missing_private_class_is_backend_unavailable(world: AneWorld) -> None:
    world.missing_classes.add("_ANERequest")
    with pytest.raises(runtime.BackendUnavailable, match="_ANERequest"):
        world.bridge()
    world.missing_classes = {"_ANEPerformanceStats"}  # optional: the bridge still builds
    assert "_ANEPerformanceStats" not in world.bridge().classes


# ---- the sequence and the hardware facts ----------------------------------------------------


def test_compile_eval_unload_through_the_real_bridge(world: AneWorld) -> None:
    k = backend(world).compile(softmax(), qos=17)
    assert world.calls[:6] == [
        "modelWithMILText:weights:optionsPlist:",
        "inMemoryModelWithDescriptor:",
        "hexStringIdentifier",
        "compileWithQoS:options:error:",
        "loadWithQoS:options:error:",
        "objectWithIOSurface:",
    ]
    x = np.linspace(-2, 2, 8 * 16, dtype=np.float32).reshape(8, 16)
    k.input.write(x)
    k.eval()
    assert np.array_equal(k.output.read(), T.f16(x).astype(np.float32))  # the stand-in echoes
    assert world.pool_depth == 0 and world.rejected == []
    k.unload()
    assert world.calls[-1] == "unloadWithQoS:error:"


def test_weights_dict_is_never_nil_and_mil_is_nsdata(world: AneWorld) -> None:
    # the stand-in refuses a nil dictionary and an NSString (str) MIL text outright
    with backend(world).compile(softmax()) as k:
        assert k.loaded
    prog, weights = T.conv_program(np.eye(16, dtype=np.float16), 8)
    with backend(world).compile(prog, weights) as k:
        assert (k.folder / "weights" / "weights.bin").read_bytes() == next(iter(weights.values()))
    bridge = world.bridge()
    with pytest.raises(ConformanceViolation, match="NSData"):
        bridge.classes["_ANEInMemoryModelDescriptor"].modelWithMILText_weights_optionsPlist_(
            "text", {}, None
        )


def test_iosurface_lock_tuples_and_balanced_locks(world: AneWorld) -> None:
    with backend(world).compile(softmax()) as k:
        seed = k.input.iosurface.seed
        k.input.write(np.ones((8, 16), np.float32))
        k.output.read()
        assert k.input.iosurface.seed == seed + 1  # a write lock bumps the seed
        assert all(ref().locks == 0 for ref in world.surfaces if ref() is not None)


# ---- 1. perfStats ---------------------------------------------------------------------------


def test_perf_stats_are_nil_by_default(world: AneWorld) -> None:
    with backend(world).compile(softmax()) as k:
        k.eval()
        k.request(k.new_surface()).eval()
        assert k.stats.hw_ns is None
    assert world.perf_stats_args == [None, None]


def test_perf_stats_when_enabled_are_an_array_with_the_mask_set(world: AneWorld) -> None:
    with backend(world, perf_stats=True).compile(softmax()) as k:
        k.eval()
        assert k.stats.hw_ns == 1000
    (arg,) = world.perf_stats_args
    assert isinstance(arg, NSArray) and [type(s) for s in arg.items] == [PerfStats]


def test_hw_time_is_read_from_the_requests_perf_stats_array(world: AneWorld) -> None:
    world.stats_in_new_objects = True
    with backend(world, perf_stats=True).compile(softmax()) as k:
        k.eval()
        assert k.stats.hw_ns == 1000
        (arg,) = world.perf_stats_args
        assert arg.items[0].ns == 0  # the object we passed was not filled in


def test_perf_stats_fall_back_to_nil_on_any_failure(world: AneWorld) -> None:
    world.raise_at["setPerfStatsMask:"] = ("NSInvalidArgumentException", "unrecognized selector")
    with backend(world, perf_stats=True).compile(softmax()) as k:
        k.eval()
    assert world.perf_stats_args == [None]
    world.raise_at = {"statsWithHardwareExecutionNS:": ("NSGenericException", "nope")}
    with backend(world, perf_stats=True).compile(softmax()) as k:
        k.eval()
    assert world.perf_stats_args[-1] is None


# ---- 2. Objective-C exceptions -> typed errors ---------------------------------------------


@pytest.mark.parametrize(
    ("selector", "exc_name", "error"),
    [
        ("modelWithMILText:weights:optionsPlist:", "NSInvalidArgumentException", "CompileError"),
        ("inMemoryModelWithDescriptor:", "NSGenericException", "CompileError"),
        ("hexStringIdentifier", "NSRangeException", "CompileError"),
        ("compileWithQoS:options:error:", "NSInvalidArgumentException", "CompileError"),
        ("loadWithQoS:options:error:", "NSUnknownKeyException", "CompileError"),
        ("objectWithIOSurface:", "NSInvalidArgumentException", "SurfaceError"),
        ("evaluateWithQoS:options:request:error:", "NSRangeException", "EvalError"),
        (REQUEST_SELECTOR, "NSInvalidArgumentException", "EvalError"),
    ],
)
def test_objc_exceptions_become_typed_errors_naming_the_selector(
    world: AneWorld, selector: str, exc_name: str, error: str
) -> None:
    world.raise_at[selector] = (exc_name, "something went wrong")
    cls = getattr(runtime, error)
    with pytest.raises(cls) as info:
        k = backend(world).compile(softmax())
        k.eval()
    text = str(info.value)
    assert selector in text and exc_name in text and "something went wrong" in text
    assert ane_compiles(world) == (1 if error == "EvalError" else 0)


def test_load_retry_applies_to_an_objc_exception(world: AneWorld) -> None:
    world.fail_once = True
    world.raise_at["loadWithQoS:options:error:"] = ("NSGenericException", "slot busy")
    with backend(world).compile(softmax()) as k:
        assert k.loaded
    assert world.calls.count("loadWithQoS:options:error:") == 2


def test_nserror_domain_code_and_text_are_named(world: AneWorld) -> None:
    world.fail_at["compileWithQoS:options:error:"] = NSErrorStandIn(3, "InvalidMILProgram")
    with pytest.raises(runtime.CompileError) as info:
        backend(world).compile(softmax())
    text = str(info.value)
    assert "com.apple.appleneuralengine" in text and "code 3" in text
    assert "InvalidMILProgram" in text
    assert list(world.root.iterdir()) == []


# ---- 3. status codes live in the text -------------------------------------------------------


def test_status_and_status_type_are_parsed_from_the_text_and_explained() -> None:
    code, text = describe_error(NSErrorStandIn(8, STATUS_0X1D))
    assert code == 8 and "status 0x1d" in text and "size floor" in text
    err = AneCallError("x", 8, "y", status=0x1D, status_type=0x9)
    assert "Program Inference error" in str(err)
    from anetrain.runtime.ane.objc_bridge import nserror_call_error

    parsed = nserror_call_error(
        "evaluateWithQoS:options:request:error:", NSErrorStandIn(8, STATUS_0X1D)
    )
    assert (parsed.code, parsed.status, parsed.status_type) == (8, 0x1D, 0x9)


def test_status_0x1d_with_several_inputs_is_a_multi_input_error(world: AneWorld) -> None:
    chip = dataclasses.replace(runtime.get_chip("m4"), multi_input_allowed=True)
    k = backend(world, chip).compile(two_inputs())  # the stand-in M4 takes one input
    with pytest.raises(runtime.MultiInputError, match="status 0x1d"):
        k.eval()
    k.unload()


def test_status_0x1d_on_one_input_is_an_eval_error_saying_why(world: AneWorld) -> None:
    world.fail_at["evaluateWithQoS:options:request:error:"] = NSErrorStandIn(8, STATUS_0X1D)
    with backend(world).compile(softmax()) as k:
        with pytest.raises(runtime.EvalError, match="surfaces below the size floor") as info:
            k.eval()
        assert not isinstance(info.value, runtime.MultiInputError)


# ---- 4. the surface floor -------------------------------------------------------------------


def test_surfaces_are_allocated_at_least_at_the_floor_and_page_rounded(world: AneWorld) -> None:
    with backend(world).compile(softmax()) as k:  # 256-byte tensors
        for s in (*k.inputs, *k.outputs, k.new_surface()):
            assert s.alloc_bytes >= k.chip.min_surface_bytes and s.alloc_bytes % PAGE_BYTES == 0
            assert s.iosurface.alloc_size == s.alloc_bytes
            assert s.array.nbytes == 256
        k.eval()
    assert world.rejected == []
    big = T.softmax_program(1000, 40)  # 80000 bytes: above the floor, rounded up to pages
    with backend(world).compile(big) as k:
        assert k.input.alloc_bytes == 81920


# ---- 5. the model folder lives as long as the kernel -------------------------------------


def test_load_after_unload_reuses_the_folder_without_compiling(world: AneWorld) -> None:
    k = backend(world).compile(softmax())
    folder = k.folder
    k.unload()
    assert folder is not None and folder.is_dir() and k.folder == folder
    k.load()
    k.eval()
    assert world.compiles == 1 and ane_compiles(world) == 1
    k.unload()
    del k
    gc.collect()
    assert not folder.exists()  # released when the kernel is finalized


# ---- 6. same text and keys, different weight bytes ---------------------------------------


def test_same_text_different_weights_never_share_stale_files(world: AneWorld) -> None:
    b = backend(world)
    p1, w1 = T.conv_program(np.eye(16, dtype=np.float16), 8)
    p2, w2 = T.conv_program(2 * np.eye(16, dtype=np.float16), 8)
    k1 = b.compile(p1, w1)
    k2 = b.compile(p2, w2)  # the stand-in refuses to compile another program's files
    assert k1.folder == k2.folder  # hexStringIdentifier ignores the bytes
    k1.unload()
    k1.load()  # the folder now holds k2's files: rewrite and compile, never load k2's program
    assert world.compiles == 3 and ane_compiles(world) == 3
    k2.unload()
    k2.load()
    assert world.compiles == 4
    for k in (k1, k2):
        k.unload()


# ---- 7. several inputs: bound by name, equal allocation sizes ---------------------------


def two_inputs() -> Any:
    b = Builder("ios18")
    z = b.input("zeta", FP16, [1, 4, 1, 8])  # declared first, second by name
    a = b.input("alpha", FP16, [1, 768, 1, 64])  # 98304 bytes: above the floor
    s = b.slice_by_size(a, T.ints(b, [0, 0, 0, 0], "b0"), T.ints(b, [1, 4, 1, 8], "s0"))
    b.returns(b.add(s, z, name="y"))
    return b.program()


def test_several_inputs_are_ordered_by_name_with_equal_sizes(world: AneWorld) -> None:
    world.multi_input, world.echo_input = True, "alpha"
    chip = dataclasses.replace(runtime.get_chip("m4"), multi_input_allowed=True)
    with backend(world, chip).compile(two_inputs()) as k:
        zeta, alpha = k.inputs
        assert (zeta.name, alpha.name) == ("zeta", "alpha")
        assert zeta.alloc_bytes == alpha.alloc_bytes == 98304
        zeta.write(np.full((4, 8), 3.0, np.float32))
        alpha.write(np.full((768, 64), 5.0, np.float32))
        k.eval()
        assert world.rejected == []
        # the stand-in ANE echoes the input it binds to the name 'alpha'
        assert np.all(k.output.read() == 5.0)
        other = backend(world, chip).compile(T.softmax_program(4, 8))
        with pytest.raises(runtime.SurfaceError):
            k.request(other.new_surface(), alpha)
        other.unload()


# ---- 8. NumPy views keep the IOSurface alive --------------------------------------------


def test_numpy_views_keep_the_iosurface_alive(world: AneWorld) -> None:
    k = backend(world).compile(softmax())
    view = k.input.array
    rows = k.output.rows
    surfaces = [weakref.ref(k.input.iosurface), weakref.ref(k.output.iosurface)]
    k.unload()
    del k
    gc.collect()
    assert all(ref() is not None for ref in surfaces)
    view[...] = 1.5
    assert rows.shape == (8, 16)
    del view, rows
    gc.collect()
    assert all(ref() is None for ref in surfaces)


# ---- 9. the same chip-profile preflight as the simulator --------------------------------


def test_programs_the_chip_cannot_run_fail_before_any_bridge_call(world: AneWorld) -> None:
    with pytest.raises(runtime.UnsupportedOpError, match=r"program\(1.3\)"):
        backend(world, "m1").compile(softmax())  # ios18 text on an M1
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 8, 1, 16])
    b.returns(b.cast(b.cast(x, "fp32", name="up"), "fp16", name="y"))
    with pytest.raises(runtime.UnsupportedOpError, match="cast"):
        backend(world, "m1").compile(b.program())
    assert world.calls == [] and ane_compiles(world) == 0


# ---- the rest of the sequence: retries, cleanup, sharing, reuse, budget -----------------


def test_second_load_failure_is_a_compile_error_with_no_state_left(world: AneWorld) -> None:
    world.fail_at["loadWithQoS:options:error:"] = NSErrorStandIn(5, "busy")
    with pytest.raises(runtime.CompileError, match=r"failed twice.*busy"):
        backend(world).compile(softmax())
    assert world.calls.count("loadWithQoS:options:error:") == 2
    assert list(world.root.iterdir()) == [] and ane_compiles(world) == 0


def test_surface_failure_unloads_and_removes_the_folder(world: AneWorld) -> None:
    world.surface_create_fails = True
    with pytest.raises(runtime.SurfaceError, match="IOSurface"):
        backend(world).compile(softmax())
    assert world.calls[-1] == "unloadWithQoS:error:"
    assert list(world.root.iterdir()) == [] and ane_compiles(world) == 0


def test_reload_recompiles_when_the_load_fails(world: AneWorld) -> None:
    k = backend(world).compile(softmax())
    k.unload()
    world.fail_at["loadWithQoS:options:error:"] = [NSErrorStandIn(5, "gone")] * 2
    k.load()  # load, retry, then compile again (counted) and load
    assert k.loaded and world.compiles == 2 and ane_compiles(world) == 2
    k.unload()
    world.fail_at["loadWithQoS:options:error:"] = NSErrorStandIn(5, "gone")
    with pytest.raises(runtime.CompileError, match="gone"):
        k.load()
    assert not k.loaded


def test_same_program_twice_shares_one_folder(world: AneWorld) -> None:
    b = backend(world)
    k1, k2 = b.compile(softmax()), b.compile(softmax())
    assert k1.folder == k2.folder is not None
    folder = k1.folder
    del k1
    gc.collect()
    assert folder.is_dir()
    k2.unload()
    del k2
    gc.collect()
    assert not folder.exists()


def test_request_reuse_shares_outputs_and_surfaces(world: AneWorld) -> None:
    with backend(world).compile(softmax()) as k:
        xs = [np.full((8, 16), i, np.float32) for i in range(3)]
        surfaces = [k.new_surface() for _ in xs]
        for s, x in zip(surfaces, xs, strict=True):
            s.write(x)
        requests = [k.request(s) for s in surfaces]
        for _ in range(2):
            for x, r in zip(xs, requests, strict=True):
                r.eval()
                assert r.outputs[0] is k.output
                assert np.array_equal(k.output.read(), x)
        wrapped = world.calls.count("objectWithIOSurface:")
        assert wrapped == 2 + 3  # each surface is wrapped once, however often it is used


def test_foreign_surfaces_are_rejected(world: AneWorld) -> None:
    k = backend(world).compile(softmax())
    with pytest.raises(runtime.SurfaceError, match="new_surface"):
        k.request(runtime.Surface(k.input.shape, FP16))
    k.unload()


def test_multi_input_is_refused_before_the_ane(world: AneWorld) -> None:
    k = backend(world).compile(two_inputs())
    with pytest.raises(runtime.MultiInputError, match="refused before"):
        k.eval()
    k.unload()
    assert "evaluateWithQoS:options:request:error:" not in world.calls


def test_budget_is_enforced_through_the_base_class(world: AneWorld) -> None:
    b = backend(world, compile_budget=1)
    k = b.compile(softmax())
    with pytest.raises(runtime.CompileBudgetExceeded):
        b.compile(softmax())
    assert world.compiles == 1
    k.unload()


# ---- the Mac-side script that regenerates the table ----------------------------------------

# encodings as the ObjC runtime reports them for the signatures in the public class dumps
ENCODINGS = {
    "_ANEInMemoryModelDescriptor": {"+modelWithMILText:weights:optionsPlist:": "@40@0:8@16@24@32"},
    "_ANEInMemoryModel": {
        "+inMemoryModelWithDescriptor:": "@24@0:8@16",
        "-hexStringIdentifier": "@16@0:8",
        "-compileWithQoS:options:error:": "B36@0:8I16@20^@28",
        "-loadWithQoS:options:error:": "B36@0:8I16@20^@28",
        "-evaluateWithQoS:options:request:error:": "B44@0:8I16@20@28^@36",
        "-unloadWithQoS:error:": "B28@0:8I16^@20",
        "-setPerfStatsMask:": "v20@0:8I16",
    },
    "_ANERequest": {
        "+requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:"
        "procedureIndex:": "@72@0:8@16@24@32@40@48@56@64",
        "-perfStatsArray": "@16@0:8",
    },
    "_ANEIOSurfaceObject": {"+objectWithIOSurface:": "@24@0:8^{__IOSurface=}16"},
    "_ANEPerformanceStats": {
        "+statsWithHardwareExecutionNS:": "@24@0:8Q16",
        "-hwExecutionTime": "Q16@0:8",
    },
    "_ANEDeviceInfo": {"+aneSubType": "@16@0:8"},
}


def _dump_script() -> Any:
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "dump_ane_selectors.py"
    spec = importlib.util.spec_from_file_location("dump_ane_selectors", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoding_tokens_and_kinds() -> None:
    assert sels.split_encoding("B36@0:8I16@20^@28") == ["B", "@", ":", "I", "@", "^@"]
    assert sels.split_encoding('@24@0:8r^{__IOSurface=}16@"NSString"24') == [
        "@",
        "@",
        ":",
        "^{__IOSurface=}",
        '@"NSString"',
    ]
    assert sels.encoding_kinds("B28@0:8I16^@20") == ("BOOL", ("uint32", sels.ERROR_OUT))


def test_dump_script_compares_a_machine_against_the_table() -> None:
    script = _dump_script()
    found = {"classes": json.loads(json.dumps(ENCODINGS))}
    assert script.compare(found) == []
    found["classes"]["_ANEInMemoryModel"]["-compileWithQoS:options:error:"] = "B36@0:8Q16@20@28"
    del found["classes"]["_ANERequest"]
    problems = script.compare(found)
    assert len(problems) == 2
    assert any("compileWithQoS" in p and "uint64" in p for p in problems)
    assert any("_ANERequest is missing" in p for p in problems)
