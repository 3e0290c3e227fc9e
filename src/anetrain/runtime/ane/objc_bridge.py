"""PyObjC access to the private AppleNeuralEngine framework, opened on first use.

Nothing here imports PyObjC at module level: ``anetrain.runtime.ane`` must import on Linux so
lint, type checks and the import tests run in CI. :func:`load_bridge` imports PyObjC, ``dlopen``s
the framework and builds the bridge once per process (:func:`build_bridge` takes the three
modules as arguments, so the binding-conformance tests drive this very code with stand-ins).
:class:`AneBridge` is the only code that talks Objective-C; every call it makes is mapped to
:class:`AneCallError`, whether the selector returned NO/nil with an NSError or raised an
Objective-C exception (PyObjC raises those as ``objc.error``, ``ValueError``, ``KeyError``,
``IndexError``...).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from anetrain.runtime.ane import selectors as sels
from anetrain.runtime.errors import AneRuntimeError, BackendUnavailable, SurfaceError

FRAMEWORK = "/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine"
PYOBJC_PACKAGES = "pyobjc-core pyobjc-framework-Cocoa pyobjc-framework-IOSurface"
MODEL_CLASS = "_ANEInMemoryModel"
REQUIRED_CLASSES = sels.required_classes()
OPTIONAL_CLASSES = sels.optional_classes()
REQUEST_SELECTOR = (
    "requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:procedureIndex:"
)


class AneCallError(AneRuntimeError):
    """A private-API call failed: returned NO/nil, or raised an Objective-C exception.

    ``call`` is the selector; ``code``/``domain`` come from the NSError; ``status`` and
    ``status_type`` are parsed from its text (the framework puts ``status=0x1d`` there, not in
    the code); ``description`` is the full text plus what the status is known to mean.
    """

    def __init__(
        self,
        call: str,
        code: int | None,
        description: str,
        *,
        domain: str | None = None,
        status: int | None = None,
        status_type: int | None = None,
    ) -> None:
        explained = sels.explain_status(status, status_type)
        if explained:
            description = f"{description} [{explained}]"
        super().__init__(f"{call} failed: {description}")
        self.call = call
        self.code = code
        self.domain = domain
        self.status = status
        self.status_type = status_type
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


def _text(fn: Callable[[], Any]) -> str:
    try:
        value = fn()
    except Exception:
        return ""
    return "" if value is None else str(value)


def describe_error(err: Any) -> tuple[int | None, str]:
    """``(code, text)`` of an NSError (duck-typed: anything with code/domain/description)."""
    call = nserror_call_error("", err)
    return call.code, call.description


def nserror_call_error(call: str, err: Any) -> AneCallError:
    """An :class:`AneCallError` for ``call`` from an NSError (or None when none came back)."""
    if err is None:
        return AneCallError(call, None, "no NSError was returned")
    try:
        code = int(err.code())
    except Exception:
        return AneCallError(call, None, str(err))
    domain = _text(err.domain)
    text = _text(err.localizedDescription) or _text(err.description)
    info = ""
    user_info = None
    try:
        user_info = err.userInfo()
    except Exception:
        user_info = None
    if user_info:
        try:
            info = " " + str({str(k): str(v) for k, v in dict(user_info).items()})
        except Exception:
            info = f" {user_info}"
    full = f"{domain} code {code} (0x{code:x}): {text}{info}"
    status, status_type = sels.parse_status(text, _text(err.description), info)
    return AneCallError(call, code, full, domain=domain, status=status, status_type=status_type)


def exception_call_error(call: str, exc: BaseException) -> AneCallError:
    """An :class:`AneCallError` for an Objective-C exception PyObjC raised as a Python one."""
    info = getattr(exc, "_pyobjc_info_", None)
    detail = str(exc)
    if isinstance(info, Mapping):
        name, reason = info.get("name"), info.get("reason")
        detail = f"{name}: {reason}" if name or reason else detail
    text = f"raised {type(exc).__name__} ({detail})"
    status, status_type = sels.parse_status(detail)
    return AneCallError(call, None, text, status=status, status_type=status_type)


def _ok_and_error(result: Any) -> tuple[bool, Any]:
    """PyObjC returns ``(BOOL, NSError)`` for an out-parameter; accept a bare BOOL too."""
    if isinstance(result, tuple):
        return bool(result[0]), result[1] if len(result) > 1 else None
    return bool(result), None


def _kern_return(result: Any) -> int:
    """IOSurfaceLock/Unlock return ``(kern_return_t, seed)`` with the seed out-parameter."""
    value = result[0] if isinstance(result, tuple) else result
    return int(value)


class SurfaceMemory:
    """The bytes of one IOSurface as a NumPy-compatible buffer that keeps the surface alive.

    ``IOSurfaceGetBaseAddress`` gives a varlist that knows nothing of the IOSurface; NumPy views
    made from this object (``np.asarray``) hold it as their base, and it holds the IOSurfaceRef,
    so no view can outlive the memory it points at.
    """

    def __init__(self, ref: Any, varlist: Any, view: memoryview) -> None:
        self.ref = ref
        self._varlist = varlist
        self._view = view
        self._array = np.frombuffer(view, np.uint8)
        self.__array_interface__ = {
            "shape": (len(self._array),),
            "typestr": "|u1",
            "data": (self._array.ctypes.data, False),
            "version": 3,
        }


class AneBridge:
    """The private classes and the PyObjC calls the backend needs, each mapped to Python types.

    Failed calls raise :class:`AneCallError` (naming the selector and the NSError domain, code,
    text and parsed status); callers turn it into the runtime's typed errors. Every call runs
    in its own autorelease pool, since factory methods return autoreleased objects and worker
    threads have no pool of their own.
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

    @contextmanager
    def _calling(self, call: str) -> Iterator[None]:
        """Map any exception raised inside to AneCallError for ``call``; pool the call."""
        try:
            with self.objc.autorelease_pool():
                yield
        except AneCallError:
            raise
        except Exception as exc:  # objc.error, ValueError, KeyError, IndexError, TypeError...
            raise exception_call_error(call, exc) from exc

    def _nsdata(self, data: bytes) -> Any:
        return self.foundation.NSData.dataWithBytes_length_(data, len(data))

    def _number(self, value: int) -> Any:
        return self.foundation.NSNumber.numberWithInt_(value)

    def _array(self, items: Sequence[Any]) -> Any:
        return self.foundation.NSArray.arrayWithArray_(list(items))

    def _empty_dict(self) -> Any:
        return self.foundation.NSDictionary.dictionary()

    @staticmethod
    def _check(call: str, result: Any) -> None:
        ok, err = _ok_and_error(result)
        if not ok:
            raise nserror_call_error(call, err)

    @staticmethod
    def _not_nil(call: str, value: Any, what: str = "returned nil") -> Any:
        if value is None:
            raise AneCallError(call, None, what)
        return value

    # ---- model ------------------------------------------------------------------------------

    def descriptor(self, mil: bytes, weights: Mapping[str, bytes]) -> Any:
        """``+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]``.

        The MIL text goes as NSData (an NSString crashes: Orion). The weights dict maps each
        BLOBFILE path to ``{"offset": 0, "data": NSData}``; it is an empty dictionary, never
        nil, when there are no weights (nil fails to compile silently: maderix).
        """
        call = "modelWithMILText:weights:optionsPlist:"
        with self._calling(call):
            entries = self.foundation.NSMutableDictionary.dictionary()
            for key, blob in weights.items():
                entry = self.foundation.NSMutableDictionary.dictionary()
                entry.setObject_forKey_(self._number(0), "offset")
                entry.setObject_forKey_(self._nsdata(blob), "data")
                entries.setObject_forKey_(entry, key)
            cls = self.classes["_ANEInMemoryModelDescriptor"]
            desc = cls.modelWithMILText_weights_optionsPlist_(self._nsdata(mil), entries, None)
        return self._not_nil(call, desc, "returned nil for this MIL text")

    def model(self, descriptor: Any) -> Any:
        """``+[_ANEInMemoryModel inMemoryModelWithDescriptor:]``."""
        call = "inMemoryModelWithDescriptor:"
        with self._calling(call):
            model = self.classes[MODEL_CLASS].inMemoryModelWithDescriptor_(descriptor)
        return self._not_nil(call, model)

    def hex_identifier(self, model: Any) -> str:
        """``-[model hexStringIdentifier]``: names the temp folder the compiler reads."""
        with self._calling("hexStringIdentifier"):
            ident = model.hexStringIdentifier()
        if not ident:
            raise AneCallError("hexStringIdentifier", None, "returned nil")
        return str(ident)

    def temp_root(self) -> str:
        """``NSTemporaryDirectory()``, where the framework looks for the model folder."""
        with self._calling("NSTemporaryDirectory"):
            return str(self.foundation.NSTemporaryDirectory())

    def set_perf_stats_mask(self, model: Any, mask: int) -> None:
        """``-[model setPerfStatsMask:]``, before compiling, so evaluations fill perf stats."""
        with self._calling("setPerfStatsMask:"):
            model.setPerfStatsMask_(mask)

    def compile(self, model: Any, qos: int) -> None:
        call = "compileWithQoS:options:error:"
        with self._calling(call):
            result = model.compileWithQoS_options_error_(qos, self._empty_dict(), None)
        self._check(call, result)

    def load(self, model: Any, qos: int) -> None:
        call = "loadWithQoS:options:error:"
        with self._calling(call):
            result = model.loadWithQoS_options_error_(qos, self._empty_dict(), None)
        self._check(call, result)

    def unload(self, model: Any, qos: int) -> None:
        call = "unloadWithQoS:error:"
        with self._calling(call):
            result = model.unloadWithQoS_error_(qos, None)
        self._check(call, result)

    def evaluate(self, model: Any, qos: int, request: Any) -> None:
        call = "evaluateWithQoS:options:request:error:"
        with self._calling(call):
            result = model.evaluateWithQoS_options_request_error_(
                qos, self._empty_dict(), request, None
            )
        self._check(call, result)

    # ---- surfaces and requests ----------------------------------------------------------

    def create_surface(self, nbytes: int) -> Any:
        """A flat IOSurface: width=bytes, height 1, 1 byte per element, pixel format 0."""
        s = self.iosurface
        with self._calling("IOSurfaceCreate"):
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
        return self._not_nil("IOSurfaceCreate", ref, f"returned NULL for {nbytes} bytes")

    def surface_memory(self, ref: Any, nbytes: int) -> SurfaceMemory:
        """The surface's ``nbytes`` bytes (``IOSurfaceGetBaseAddress``), holding the surface.

        The address of a surface like ours (not purgeable, not GPU-tiled) does not change over
        its life, so the view is taken once; every access still holds IOSurfaceLock.
        """
        with self._calling("IOSurfaceGetBaseAddress"):
            base = self.iosurface.IOSurfaceGetBaseAddress(ref)
            base = self._not_nil("IOSurfaceGetBaseAddress", base, "returned NULL")
            view = base.as_buffer(nbytes)
        return SurfaceMemory(ref, base, view)

    def lock(self, ref: Any, read_only: bool) -> None:
        s = self.iosurface
        options = s.kIOSurfaceLockReadOnly if read_only else 0
        with self._calling("IOSurfaceLock"):
            rc = _kern_return(s.IOSurfaceLock(ref, options, None))
        if rc != 0:
            raise SurfaceError(f"IOSurfaceLock failed with kern_return_t 0x{rc:x}")

    def unlock(self, ref: Any, read_only: bool) -> None:
        s = self.iosurface
        options = s.kIOSurfaceLockReadOnly if read_only else 0
        with self._calling("IOSurfaceUnlock"):
            rc = _kern_return(s.IOSurfaceUnlock(ref, options, None))
        if rc != 0:
            raise SurfaceError(f"IOSurfaceUnlock failed with kern_return_t 0x{rc:x}")

    def wrap_surface(self, ref: Any) -> Any:
        """``+[_ANEIOSurfaceObject objectWithIOSurface:]``."""
        with self._calling("objectWithIOSurface:"):
            obj = self.classes["_ANEIOSurfaceObject"].objectWithIOSurface_(ref)
        return self._not_nil("objectWithIOSurface:", obj)

    def make_request(self, inputs: Sequence[Any], outputs: Sequence[Any], perf_stats: Any) -> Any:
        """``+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:
        perfStats:procedureIndex:]``: indices 0..n-1 in the order given, procedure 0, no
        weights buffer, and ``perfStats`` nil or an array holding the one stats object."""
        stats = None if perf_stats is None else self._array([perf_stats])
        with self._calling(REQUEST_SELECTOR):
            factory = getattr(self.classes["_ANERequest"], REQUEST_SELECTOR.replace(":", "_"))
            request = factory(
                self._array(inputs),
                self._array([self._number(i) for i in range(len(inputs))]),
                self._array(outputs),
                self._array([self._number(i) for i in range(len(outputs))]),
                None,
                stats,
                self._number(0),
            )
        return self._not_nil(REQUEST_SELECTOR, request)

    # ---- optional: performance stats and device info ------------------------------------

    def new_perf_stats(self) -> Any | None:
        """A ``_ANEPerformanceStats`` to attach to a request, or None if it cannot be made.

        ``alloc/init`` returns nil (seen on M5), so the factory is used instead.
        """
        cls = self.classes.get("_ANEPerformanceStats")
        if cls is None:
            return None
        try:
            with self.objc.autorelease_pool():
                return cls.statsWithHardwareExecutionNS_(0)
        except Exception:
            return None

    def hw_time(self, perf_stats: Any, request: Any = None) -> int | None:
        """``hwExecutionTime`` in ns, or None if unreadable: from the request's
        ``perfStatsArray`` when it has an entry (some firmware reports there), else from the
        stats object passed in."""
        candidates = []
        if request is not None:
            try:
                filled = request.perfStatsArray()
                if filled is not None and filled.count() > 0:
                    candidates.append(filled.objectAtIndex_(0))
            except Exception:
                pass
        candidates.append(perf_stats)
        for stats in candidates:
            try:
                return int(stats.hwExecutionTime())
            except Exception:
                continue
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


def register_metadata(objc: ModuleType) -> None:
    """Tell PyObjC which arguments are ``NSError **`` outputs (from the selector table).

    Without it PyObjC cannot return the NSError: the call gives a bare BOOL and the reason
    for a failure is lost.
    """
    for sel in sels.selectors():
        index = sel.error_out_index()
        if index is not None:
            objc.registerMetaDataForSelector(
                sel.cls.encode(),
                sel.selector.encode(),
                {"arguments": {index: {"type_modifier": objc._C_OUT}}},
            )


def build_bridge(
    objc: ModuleType, foundation: ModuleType, iosurface: ModuleType, handle: Any = None
) -> AneBridge:
    """Register the metadata, look the classes up and return the bridge."""
    register_metadata(objc)
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
    return AneBridge(objc, foundation, iosurface, classes, handle)


# ---- loading ------------------------------------------------------------------------------

_lock = threading.Lock()
_bridge: AneBridge | None = None
_failure: str | None = None


def open_modules() -> tuple[ModuleType, ModuleType, ModuleType, Any]:
    """Import PyObjC's ``objc``, ``Foundation``, ``IOSurface`` and ``dlopen`` the framework."""
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
    return objc, Foundation, IOSurface, handle


def _open() -> AneBridge:
    return build_bridge(*open_modules())


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
