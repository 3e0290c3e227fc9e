"""PyObjC access to the private AppleNeuralEngine framework, opened on first use.

Nothing here imports PyObjC at module level: ``anetrain.runtime.ane`` must import on Linux so
lint, type checks and the import tests run in CI. :func:`load_bridge` imports PyObjC, ``dlopen``s
the framework and looks the classes up once per process, and caches the bridge (or the reason
it could not be built). :class:`AneBridge` is the only code that talks Objective-C; the kernel
and backend call its small, duck-typed interface, so tests can replace it with a fake.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from anetrain.runtime.errors import AneRuntimeError, BackendUnavailable, SurfaceError

FRAMEWORK = "/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine"
PYOBJC_PACKAGES = "pyobjc-core pyobjc-framework-Cocoa pyobjc-framework-IOSurface"
MODEL_CLASS = "_ANEInMemoryModel"
REQUIRED_CLASSES = (
    "_ANEInMemoryModelDescriptor",
    MODEL_CLASS,
    "_ANERequest",
    "_ANEIOSurfaceObject",
)
OPTIONAL_CLASSES = ("_ANEPerformanceStats", "_ANEDeviceInfo")
REQUEST_FACTORY = (  # +[_ANERequest requestWithInputs:...procedureIndex:] as PyObjC names it
    "requestWithInputs_inputIndices_outputs_outputIndices_weightsBuffer_perfStats_procedureIndex_"
)

# The private selectors take ``NSError **`` last. Without metadata PyObjC cannot know that the
# pointer is an output, so we say so; index 0 is self, 1 is _cmd, 2 the first visible argument.
ERROR_OUT_ARGS: dict[bytes, int] = {
    b"compileWithQoS:options:error:": 4,
    b"loadWithQoS:options:error:": 4,
    b"evaluateWithQoS:options:request:error:": 5,
    b"unloadWithQoS:error:": 3,
}


class AneCallError(AneRuntimeError):
    """A private-API call returned NO or nil; carries the NSError code and text if any."""

    def __init__(self, call: str, code: int | None, description: str) -> None:
        super().__init__(f"{call} failed: {description}")
        self.call = call
        self.code = code
        self.description = description


def platform_problem() -> str | None:
    """Why this machine cannot have the ane backend at all (None on macOS/arm64)."""
    if sys.platform != "darwin":
        return (
            f"the ane backend needs macOS on Apple silicon (this is {sys.platform}); "
            "use backend='sim' to run the same programs in the simulator"
        )
    machine = platform.machine()
    if machine != "arm64":
        return (
            f"the ane backend needs an arm64 Python on Apple silicon (this one is {machine}; "
            "an Intel Mac or a Python under Rosetta has no Neural Engine access)"
        )
    return None


def describe_error(err: Any) -> tuple[int | None, str]:
    """``(code, text)`` of an NSError (duck-typed: anything with code/domain/description)."""
    if err is None:
        return None, "no NSError was returned"
    try:
        code = int(err.code())
        domain = str(err.domain())
        text = str(err.localizedDescription())
    except Exception:
        return None, str(err)
    info = ""
    try:
        user_info = err.userInfo()
        if user_info:
            info = f" {dict(user_info)}"
    except Exception:
        info = ""
    return code, f"{domain} code {code} (0x{code:x}): {text}{info}"


def _ok_and_error(result: Any) -> tuple[bool, Any]:
    """PyObjC returns ``(BOOL, NSError)`` for an out-parameter; accept a bare BOOL too."""
    if isinstance(result, tuple):
        return bool(result[0]), result[1] if len(result) > 1 else None
    return bool(result), None


def _kern_return(result: Any) -> int:
    """IOSurfaceLock/Unlock return ``(kern_return_t, seed)`` with the seed out-parameter."""
    value = result[0] if isinstance(result, tuple) else result
    return int(value)


class AneBridge:
    """The private classes and the PyObjC calls the backend needs, each mapped to Python types.

    Failed calls raise :class:`AneCallError` (with the NSError text); callers turn it into
    the runtime's typed errors. Every call runs in its own autorelease pool, since factory
    methods return autoreleased objects and worker threads have no pool of their own.
    """

    def __init__(
        self,
        objc: ModuleType,
        foundation: ModuleType,
        iosurface: ModuleType,
        classes: Mapping[str, Any],
        handle: Any,
    ) -> None:
        self.objc = objc
        self.foundation = foundation
        self.iosurface = iosurface
        self.classes = dict(classes)
        self._handle = handle  # keeps the dlopen'ed framework loaded

    # ---- helpers ----------------------------------------------------------------------------

    def _nsdata(self, data: bytes) -> Any:
        return self.foundation.NSData.dataWithBytes_length_(data, len(data))

    def _number(self, value: int) -> Any:
        return self.foundation.NSNumber.numberWithInt_(value)

    def _array(self, items: Sequence[Any]) -> Any:
        return self.foundation.NSArray.arrayWithArray_(list(items))

    def _empty_dict(self) -> Any:
        return self.foundation.NSDictionary.dictionary()

    def _check(self, call: str, result: Any) -> None:
        ok, err = _ok_and_error(result)
        if not ok:
            code, text = describe_error(err)
            raise AneCallError(call, code, text)

    # ---- model ------------------------------------------------------------------------------

    def descriptor(self, mil: bytes, weights: Mapping[str, bytes]) -> Any:
        """``+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]``.

        The weights dict maps each BLOBFILE path to ``{"offset": 0, "data": NSData}``; it is an
        empty dictionary, never nil, when there are no weights (nil fails to compile silently).
        """
        with self.objc.autorelease_pool():
            entries = self.foundation.NSMutableDictionary.dictionary()
            for key, blob in weights.items():
                entry = self.foundation.NSMutableDictionary.dictionary()
                entry.setObject_forKey_(self._number(0), "offset")
                entry.setObject_forKey_(self._nsdata(blob), "data")
                entries.setObject_forKey_(entry, key)
            cls = self.classes["_ANEInMemoryModelDescriptor"]
            desc = cls.modelWithMILText_weights_optionsPlist_(self._nsdata(mil), entries, None)
        if desc is None:
            raise AneCallError(
                "modelWithMILText:weights:optionsPlist:", None, "returned nil for this MIL text"
            )
        return desc

    def model(self, descriptor: Any) -> Any:
        """``+[_ANEInMemoryModel inMemoryModelWithDescriptor:]``."""
        with self.objc.autorelease_pool():
            model = self.classes[MODEL_CLASS].inMemoryModelWithDescriptor_(descriptor)
        if model is None:
            raise AneCallError("inMemoryModelWithDescriptor:", None, "returned nil")
        return model

    def hex_identifier(self, model: Any) -> str:
        """``-[model hexStringIdentifier]``: names the temp folder the compiler reads."""
        with self.objc.autorelease_pool():
            ident = model.hexStringIdentifier()
        if not ident:
            raise AneCallError("hexStringIdentifier", None, "returned nil")
        return str(ident)

    def temp_root(self) -> str:
        """``NSTemporaryDirectory()``, where the framework looks for the model folder."""
        with self.objc.autorelease_pool():
            return str(self.foundation.NSTemporaryDirectory())

    def compile(self, model: Any, qos: int) -> None:
        with self.objc.autorelease_pool():
            result = model.compileWithQoS_options_error_(qos, self._empty_dict(), None)
            self._check("compileWithQoS:options:error:", result)

    def load(self, model: Any, qos: int) -> None:
        with self.objc.autorelease_pool():
            result = model.loadWithQoS_options_error_(qos, self._empty_dict(), None)
            self._check("loadWithQoS:options:error:", result)

    def unload(self, model: Any, qos: int) -> None:
        with self.objc.autorelease_pool():
            self._check("unloadWithQoS:error:", model.unloadWithQoS_error_(qos, None))

    def evaluate(self, model: Any, qos: int, request: Any) -> None:
        with self.objc.autorelease_pool():
            result = model.evaluateWithQoS_options_request_error_(
                qos, self._empty_dict(), request, None
            )
            self._check("evaluateWithQoS:options:request:error:", result)

    # ---- surfaces and requests ----------------------------------------------------------

    def create_surface(self, nbytes: int) -> Any:
        """A flat IOSurface: width=bytes, height 1, 1 byte per element, pixel format 0."""
        s = self.iosurface
        with self.objc.autorelease_pool():
            props = self.foundation.NSDictionary.dictionaryWithDictionary_(
                {
                    s.kIOSurfaceWidth: nbytes,
                    s.kIOSurfaceHeight: 1,
                    s.kIOSurfaceBytesPerElement: 1,
                    s.kIOSurfaceBytesPerRow: nbytes,
                    s.kIOSurfaceAllocSize: nbytes,
                    s.kIOSurfacePixelFormat: 0,
                }
            )
            ref = s.IOSurfaceCreate(props)
        if ref is None:
            raise AneCallError("IOSurfaceCreate", None, f"returned NULL for {nbytes} bytes")
        return ref

    def surface_memory(self, ref: Any, nbytes: int) -> memoryview:
        """A writable byte view of the surface (``IOSurfaceGetBaseAddress``).

        The address of a surface like ours (not purgeable, not GPU-tiled) does not change over
        its life, so the view is taken once; every access still holds IOSurfaceLock.
        """
        base = self.iosurface.IOSurfaceGetBaseAddress(ref)
        if base is None:
            raise AneCallError("IOSurfaceGetBaseAddress", None, "returned NULL")
        view: memoryview = base.as_buffer(nbytes)
        return view

    def lock(self, ref: Any, read_only: bool) -> None:
        s = self.iosurface
        options = s.kIOSurfaceLockReadOnly if read_only else 0
        rc = _kern_return(s.IOSurfaceLock(ref, options, None))
        if rc != 0:
            raise SurfaceError(f"IOSurfaceLock failed with kern_return_t 0x{rc:x}")

    def unlock(self, ref: Any, read_only: bool) -> None:
        s = self.iosurface
        options = s.kIOSurfaceLockReadOnly if read_only else 0
        rc = _kern_return(s.IOSurfaceUnlock(ref, options, None))
        if rc != 0:
            raise SurfaceError(f"IOSurfaceUnlock failed with kern_return_t 0x{rc:x}")

    def wrap_surface(self, ref: Any) -> Any:
        """``+[_ANEIOSurfaceObject objectWithIOSurface:]``."""
        with self.objc.autorelease_pool():
            obj = self.classes["_ANEIOSurfaceObject"].objectWithIOSurface_(ref)
        if obj is None:
            raise AneCallError("objectWithIOSurface:", None, "returned nil")
        return obj

    def make_request(self, inputs: Sequence[Any], outputs: Sequence[Any], perf_stats: Any) -> Any:
        """``+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:
        perfStats:procedureIndex:]`` with indices 0..n-1 in MIL order and procedure 0."""
        with self.objc.autorelease_pool():
            factory = getattr(self.classes["_ANERequest"], REQUEST_FACTORY)
            request = factory(
                self._array(inputs),
                self._array([self._number(i) for i in range(len(inputs))]),
                self._array(outputs),
                self._array([self._number(i) for i in range(len(outputs))]),
                None,
                perf_stats,
                self._number(0),
            )
        if request is None:
            raise AneCallError("requestWithInputs:...procedureIndex:", None, "returned nil")
        return request

    # ---- optional: performance stats and device info ------------------------------------

    def new_perf_stats(self) -> Any | None:
        """A ``_ANEPerformanceStats`` to attach to a request, or None if it cannot be made.

        ``alloc/init`` returns nil (seen on M5), so the documented factory is used instead.
        """
        cls = self.classes.get("_ANEPerformanceStats")
        if cls is None:
            return None
        try:
            with self.objc.autorelease_pool():
                return cls.statsWithHardwareExecutionNS_(0)
        except Exception:
            return None

    def hw_time(self, perf_stats: Any) -> int | None:
        """``hwExecutionTime`` in ns, or None if unreadable."""
        try:
            return int(perf_stats.hwExecutionTime())
        except Exception:
            return None

    def ane_subtype(self) -> str | None:
        """``+[_ANEDeviceInfo aneSubType]`` (e.g. "h16"), or None."""
        cls = self.classes.get("_ANEDeviceInfo")
        if cls is None:
            return None
        try:
            with self.objc.autorelease_pool():
                value = cls.aneSubType()
        except Exception:
            return None
        return str(value) if value else None


# ---- loading ------------------------------------------------------------------------------

_lock = threading.Lock()
_bridge: AneBridge | None = None
_failure: str | None = None


def _open() -> AneBridge:
    problem = platform_problem()
    if problem:
        raise BackendUnavailable(problem)
    try:
        import Foundation
        import IOSurface
        import objc
    except ImportError as err:
        raise BackendUnavailable(
            f"PyObjC is not installed ({err}); install it with: pip install {PYOBJC_PACKAGES}"
        ) from err
    try:
        handle = ctypes.CDLL(FRAMEWORK, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    except OSError as err:
        raise BackendUnavailable(f"cannot dlopen {FRAMEWORK}: {err}") from err
    for selector, index in ERROR_OUT_ARGS.items():
        objc.registerMetaDataForSelector(
            MODEL_CLASS.encode(), selector, {"arguments": {index: {"type_modifier": objc._C_OUT}}}
        )
    classes: dict[str, Any] = {}
    missing = []
    for name in (*REQUIRED_CLASSES, *OPTIONAL_CLASSES):
        try:
            classes[name] = objc.lookUpClass(name)
        except objc.nosuchclass_error:
            if name in REQUIRED_CLASSES:
                missing.append(name)
    if missing:
        raise BackendUnavailable(
            f"AppleNeuralEngine.framework has no {', '.join(missing)}; this macOS version "
            "changed the private API the ane backend uses"
        )
    return AneBridge(objc, Foundation, IOSurface, classes, handle)


def load_bridge() -> AneBridge:
    """The process-wide bridge; raises :class:`BackendUnavailable` saying why there is none."""
    global _bridge, _failure
    with _lock:
        if _bridge is not None:
            return _bridge
        if _failure is not None:
            raise BackendUnavailable(_failure)
        try:
            _bridge = _open()
        except BackendUnavailable as err:
            _failure = str(err)
            raise
        except Exception as err:  # anything PyObjC or the loader throws
            _failure = f"opening AppleNeuralEngine.framework failed: {type(err).__name__}: {err}"
            raise BackendUnavailable(_failure) from err
        return _bridge


def bridge_status() -> tuple[bool, str]:
    """``(True, "")`` if the bridge loads, else ``(False, reason)``; never raises."""
    try:
        load_bridge()
    except BackendUnavailable as err:
        return False, str(err)
    except Exception as err:
        return False, f"{type(err).__name__}: {err}"
    return True, ""
