"""Pure-Python stand-ins for PyObjC's ``objc``, ``Foundation`` and ``IOSurface`` modules and for
the private ANE classes, for the binding-conformance tests.

They let the *real* bridge (``anetrain.runtime.ane.objc_bridge.build_bridge`` and everything
above it) run on Linux, and they enforce the rules a real Mac would: PyObjC's (a selector
exists only if it is in the checked-in table, with that many arguments of those kinds; an
``NSError **`` comes back as a tuple only where out-parameter metadata is registered at the
right index; Objective-C exceptions surface as ``objc.error`` / ``ValueError`` / ``KeyError`` /
``IndexError``; ``IOSurfaceGetBaseAddress`` is a varlist; ``IOSurfaceLock`` returns
``(kern_return, seed)``) and the hardware facts the public sources report (perfStats nil or an
array; status 0x1d for surfaces below the floor, of unequal sizes, or several inputs on an
M4; MIL text as NSData; the weights dict never nil; the compiler reads and writes the model
folder; hexStringIdentifier ignores the weight bytes). This is binding conformance: it says the
bridge follows these rules, not that the hardware does what the rules say.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anetrain.runtime.ane import selectors as sels

ANE_DOMAIN = "com.apple.appleneuralengine"
STATUS_0X1D = (
    "ANEProgramProcessRequestDirect() Failed with status=0x1d : statusType=0x9: "
    "Program Inference error"
)
ARTEFACT = "standin-compiled.bin"  # what "the compiler" leaves in the model folder


class ConformanceViolation(BaseException):
    """The bridge broke a rule. A BaseException, so no ``except Exception`` can hide it."""


# ---- objc ------------------------------------------------------------------------------------


class ObjCError(Exception):
    """``objc.error``: an Objective-C exception without a closer Python equivalent."""


class NoSuchClassError(ObjCError):
    """``objc.nosuchclass_error``."""


# pyobjc-core translates these NSException names to built-in exceptions; others to objc.error
_EXCEPTION_MAP: dict[str, type[Exception]] = {
    "NSInvalidArgumentException": ValueError,
    "NSRangeException": IndexError,
    "NSUnknownKeyException": KeyError,
    "NSMallocException": MemoryError,
}


def objc_exception(name: str, reason: str) -> Exception:
    """The Python exception PyObjC raises for an NSException ``name``/``reason``."""
    exc = _EXCEPTION_MAP.get(name, ObjCError)(f"{name} - {reason}")
    exc._pyobjc_info_ = {"name": name, "reason": reason, "userInfo": None}  # type: ignore[attr-defined]
    return exc


class Varlist:
    """``objc.varlist``: a C pointer of unknown length. It does not keep its owner alive."""

    def __init__(self, memory: bytearray) -> None:
        self._memory = memory

    def as_buffer(self, count: int) -> memoryview:
        if count > len(self._memory):
            raise ConformanceViolation(
                f"as_buffer({count}) reads past a {len(self._memory)}-byte IOSurface"
            )
        return memoryview(self._memory)[:count]


def make_objc(world: AneWorld) -> types.ModuleType:
    objc = types.ModuleType("objc")
    objc.error = ObjCError  # type: ignore[attr-defined]
    objc.nosuchclass_error = NoSuchClassError  # type: ignore[attr-defined]
    objc._C_OUT = b"o"  # type: ignore[attr-defined]
    objc.varlist = Varlist  # type: ignore[attr-defined]

    def registerMetaDataForSelector(cls: bytes, selector: bytes, meta: dict) -> None:
        if not isinstance(cls, bytes) or not isinstance(selector, bytes):
            raise TypeError("registerMetaDataForSelector takes bytes class and selector names")
        world.metadata[(cls.decode(), selector.decode())] = meta

    def lookUpClass(name: str) -> Any:
        if name in world.missing_classes or name not in world.classes:
            raise NoSuchClassError(name)
        return world.classes[name]

    @contextlib.contextmanager
    def autorelease_pool() -> Iterator[None]:
        world.pool_depth += 1
        try:
            yield
        finally:
            world.pool_depth -= 1

    objc.registerMetaDataForSelector = registerMetaDataForSelector  # type: ignore[attr-defined]
    objc.lookUpClass = lookUpClass  # type: ignore[attr-defined]
    objc.autorelease_pool = autorelease_pool  # type: ignore[attr-defined]
    return objc


# ---- Foundation ----------------------------------------------------------------------------


class NSData:
    def __init__(self, data: bytes) -> None:
        self.bytes = bytes(data)

    @classmethod
    def dataWithBytes_length_(cls, data: bytes, length: int) -> NSData:
        if not isinstance(data, bytes | bytearray | memoryview) or length != len(data):
            raise ValueError("NSInvalidArgumentException - dataWithBytes:length: bad arguments")
        return cls(bytes(data)[:length])


class NSNumber:
    def __init__(self, value: int) -> None:
        self.value = int(value)

    @classmethod
    def numberWithInt_(cls, value: int) -> NSNumber:
        return cls(value)


class NSArray:
    def __init__(self, items: list) -> None:
        self.items = list(items)

    @classmethod
    def arrayWithArray_(cls, items: list) -> NSArray:
        return cls(items)

    def count(self) -> int:
        return len(self.items)

    def objectAtIndex_(self, index: int) -> Any:
        if not 0 <= index < len(self.items):
            raise objc_exception("NSRangeException", f"index {index} beyond bounds")
        return self.items[index]


class NSDictionary:
    def __init__(self, items: dict | None = None) -> None:
        self.items = dict(items or {})

    @classmethod
    def dictionary(cls) -> NSDictionary:
        return cls()

    @classmethod
    def dictionaryWithDictionary_(cls, items: dict) -> NSDictionary:
        return cls(items)


class NSMutableDictionary(NSDictionary):
    def setObject_forKey_(self, value: Any, key: Any) -> None:
        if value is None:
            raise ValueError("NSInvalidArgumentException - setObject:forKey: object cannot be nil")
        self.items[key] = value


class NSErrorStandIn:
    """An NSError: the ANE puts its status codes in the text, not in ``code``."""

    def __init__(self, code: int, text: str, domain: str = ANE_DOMAIN) -> None:
        self._code, self._text, self._domain = code, text, domain

    def code(self) -> int:
        return self._code

    def domain(self) -> str:
        return self._domain

    def localizedDescription(self) -> str:
        return self._text

    def description(self) -> str:
        return f'Error Domain={self._domain} Code={self._code} "{self._text}"'

    def userInfo(self) -> dict:
        return {"NSLocalizedDescription": self._text}


def make_foundation(world: AneWorld) -> types.ModuleType:
    mod = types.ModuleType("Foundation")
    mod.NSData = NSData  # type: ignore[attr-defined]
    mod.NSNumber = NSNumber  # type: ignore[attr-defined]
    mod.NSArray = NSArray  # type: ignore[attr-defined]
    mod.NSDictionary = NSDictionary  # type: ignore[attr-defined]
    mod.NSMutableDictionary = NSMutableDictionary  # type: ignore[attr-defined]
    mod.NSTemporaryDirectory = lambda: str(world.root) + "/"  # type: ignore[attr-defined]
    return mod


# ---- IOSurface -----------------------------------------------------------------------------


class IOSurfaceRef:
    """An IOSurface; its memory goes when the last Python reference does (CFRelease)."""

    def __init__(self, world: AneWorld, nbytes: int) -> None:
        self.memory = bytearray(nbytes)
        self.alloc_size = nbytes
        self.locks = 0
        self.seed = 0
        world.surfaces.append(weakref.ref(self))


def make_iosurface(world: AneWorld) -> types.ModuleType:
    mod = types.ModuleType("IOSurface")
    keys = ("Width", "Height", "BytesPerElement", "BytesPerRow", "AllocSize", "PixelFormat")
    for key in keys:
        setattr(mod, f"kIOSurface{key}", f"IOSurface{key}")
    mod.kIOSurfaceLockReadOnly = 1  # type: ignore[attr-defined]

    def IOSurfaceCreate(props: Any) -> IOSurfaceRef | None:
        items = props.items if isinstance(props, NSDictionary) else dict(props)
        width = items.get("IOSurfaceWidth")
        if set(items) != {f"IOSurface{k}" for k in keys}:
            raise ConformanceViolation(f"IOSurfaceCreate properties {sorted(items)}")
        flat = (items["IOSurfaceHeight"], items["IOSurfaceBytesPerElement"])
        same = width == items["IOSurfaceBytesPerRow"] == items["IOSurfaceAllocSize"]
        if flat != (1, 1) or not same or items["IOSurfacePixelFormat"] != 0:
            raise ConformanceViolation(f"not a flat byte surface: {items}")
        if world.surface_create_fails:
            return None
        return IOSurfaceRef(world, int(width))

    def IOSurfaceGetBaseAddress(ref: IOSurfaceRef) -> Varlist:
        return Varlist(ref.memory)

    def IOSurfaceLock(ref: IOSurfaceRef, options: int, seed: Any) -> tuple[int, int]:
        if seed is not None:
            raise TypeError("IOSurfaceLock: the seed is an output argument; pass None")
        ref.locks += 1
        return 0, ref.seed

    def IOSurfaceUnlock(ref: IOSurfaceRef, options: int, seed: Any) -> tuple[int, int]:
        if seed is not None:
            raise TypeError("IOSurfaceUnlock: the seed is an output argument; pass None")
        if ref.locks == 0:
            return 0xE00002CD, ref.seed  # kIOReturnNotLocked-like
        ref.locks -= 1
        if not options & 1:
            ref.seed += 1
        return 0, ref.seed

    mod.IOSurfaceCreate = IOSurfaceCreate  # type: ignore[attr-defined]
    mod.IOSurfaceGetBaseAddress = IOSurfaceGetBaseAddress  # type: ignore[attr-defined]
    mod.IOSurfaceLock = IOSurfaceLock  # type: ignore[attr-defined]
    mod.IOSurfaceUnlock = IOSurfaceUnlock  # type: ignore[attr-defined]
    return mod


# ---- the private classes -------------------------------------------------------------------


def _is_array(value: Any) -> bool:
    return isinstance(value, NSArray | list | tuple)


def _items(value: Any) -> list:
    return value.items if isinstance(value, NSArray) else list(value)


def _check_kind(where: str, kind: str, value: Any, nullable: bool) -> None:
    if value is None:
        if nullable:
            return
        if kind == sels.ERROR_OUT:
            return
        raise ConformanceViolation(f"{where}: nil passed where {kind} may not be nil")
    ok = {
        "uint32": lambda v: isinstance(v, int) and 0 <= v < 2**32,
        "uint64": lambda v: isinstance(v, int) and 0 <= v < 2**64,
        "NSData": lambda v: isinstance(v, NSData | bytes),  # PyObjC bridges bytes to NSData
        "NSDictionary": lambda v: isinstance(v, NSDictionary | dict),
        "NSArray": _is_array,
        "NSNumber": lambda v: isinstance(v, NSNumber | int) and not isinstance(v, bool),
        "IOSurfaceRef": lambda v: isinstance(v, IOSurfaceRef),
        "object": lambda v: True,
        sels.ERROR_OUT: lambda v: False,  # an output: PyObjC wants None there
    }[kind]
    if not ok(value):
        if kind in ("uint32", "uint64"):
            raise TypeError(f"{where}: depythonifying '{kind}', got '{type(value).__name__}'")
        raise ConformanceViolation(f"{where}: {type(value).__name__} passed as {kind}")


class ObjCProxy:
    """A class or instance: attributes resolve to selectors of the table, as in PyObjC."""

    _class_name: str
    _is_class: bool

    def __init__(self, world: AneWorld) -> None:
        self._world = world

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        selector = name.replace("_", ":")
        try:
            sel = sels.lookup(self._class_name, selector)
        except KeyError:
            raise AttributeError(
                f"'{self._class_name}' has no selector {selector!r} (not in selectors.json)"
            ) from None
        if sel.class_method != self._is_class:
            raise AttributeError(f"{selector} is not a{' class' * sel.class_method} method")
        impl = getattr(self, f"_do_{name}")

        def call(*args: Any) -> Any:
            where = f"{'+' if self._is_class else '-'}[{self._class_name} {selector}]"
            if len(args) != len(sel.args):
                raise TypeError(f"{where} takes {len(sel.args)} arguments, got {len(args)}")
            for i, (kind, value) in enumerate(zip(sel.args, args, strict=True)):
                _check_kind(f"{where} argument {i}", kind, value, i in sel.nullable)
            world = self._world
            world.calls.append(selector)
            if selector in world.raise_at:
                name_reason = world.raise_at[selector]
                if world.fail_once:
                    del world.raise_at[selector]
                raise objc_exception(*name_reason)
            result = impl(*args)
            index = sel.error_out_index()
            if index is None:
                return result
            ok, err = result
            meta = world.metadata.get((self._class_name, selector), {})
            out = meta.get("arguments", {}).get(index, {}).get("type_modifier")
            return (ok, err) if out == b"o" else ok  # no metadata: the NSError is lost

        return call


def _fail(world: AneWorld, selector: str) -> tuple[bool, Any] | None:
    err = world.fail_at.get(selector)
    if isinstance(err, list):  # fail once per listed error, then succeed
        err = err.pop(0) if err else None
    elif err is not None and world.fail_once:
        del world.fail_at[selector]
    return None if err is None else (False, err)


class Descriptor(ObjCProxy):
    _class_name, _is_class = "_ANEInMemoryModelDescriptor", True

    def _do_modelWithMILText_weights_optionsPlist_(
        self, mil: Any, weights: Any, options: Any
    ) -> Any:
        text = mil.bytes if isinstance(mil, NSData) else bytes(mil)
        entries = weights.items if isinstance(weights, NSDictionary) else dict(weights)
        blobs = {}
        for key, entry in entries.items():
            e = entry.items if isinstance(entry, NSDictionary) else dict(entry)
            offset, data = e.get("offset"), e.get("data")
            offset = offset.value if isinstance(offset, NSNumber) else offset
            if offset != 0 or not isinstance(data, NSData):
                raise ConformanceViolation(f"weights[{key!r}] must be {{offset: 0, data: NSData}}")
            blobs[str(key)] = data.bytes
        return DescriptorObject(text, blobs)


class DescriptorObject:
    def __init__(self, mil: bytes, weights: dict[str, bytes]) -> None:
        self.mil, self.weights = mil, weights


class InMemoryModelClass(ObjCProxy):
    _class_name, _is_class = "_ANEInMemoryModel", True

    def _do_inMemoryModelWithDescriptor_(self, desc: Any) -> Any:
        if not isinstance(desc, DescriptorObject):
            raise objc_exception("NSInvalidArgumentException", "not a descriptor")
        return InMemoryModel(self._world, desc)


def _digest(mil: bytes, files: dict[str, bytes]) -> str:
    h = hashlib.sha256(mil)
    for key in sorted(files):
        h.update(key.encode() + b"\0" + files[key])
    return h.hexdigest()


class InMemoryModel(ObjCProxy):
    _class_name, _is_class = "_ANEInMemoryModel", False

    def __init__(self, world: AneWorld, desc: DescriptorObject) -> None:
        super().__init__(world)
        self.desc = desc
        self.loaded = False
        self.perf_mask = 0
        self.input_names = _mil_input_names(desc.mil)

    @property
    def ident(self) -> str:
        # depends on the MIL text and the weight keys only, not on the weight bytes
        h = hashlib.sha256(self.desc.mil + b"".join(k.encode() for k in sorted(self.desc.weights)))
        return h.hexdigest()[:40].upper()

    @property
    def folder(self) -> Path:
        return self._world.root / self.ident

    def _own_files(self) -> dict[str, bytes]:
        return {k.removeprefix("@model_path/"): v for k, v in self.desc.weights.items()}

    def _do_hexStringIdentifier(self) -> str:
        return self.ident

    def _do_setPerfStatsMask_(self, mask: int) -> None:
        self.perf_mask = mask

    def _do_compileWithQoS_options_error_(self, qos: int, opts: Any, err: Any) -> Any:
        if (failed := _fail(self._world, "compileWithQoS:options:error:")) is not None:
            return failed
        folder = self.folder
        if not (folder / "model.mil").is_file():
            raise ConformanceViolation(f"compile with no model folder at {folder}")
        files = {"model.mil": (folder / "model.mil").read_bytes()}
        for rel in self._own_files():
            path = folder / rel
            files[rel] = path.read_bytes() if path.is_file() else b"<missing>"
        if files != {"model.mil": self.desc.mil, **self._own_files()}:
            raise ConformanceViolation(
                f"compile found another program's (or no) files in {folder}: the folder is "
                "named by the MIL text and weight keys only, so the bytes must be rewritten"
            )
        (folder / ARTEFACT).write_text(_digest(self.desc.mil, self._own_files()))
        self._world.compiles += 1
        return True, None

    def _do_loadWithQoS_options_error_(self, qos: int, opts: Any, err: Any) -> Any:
        if (failed := _fail(self._world, "loadWithQoS:options:error:")) is not None:
            return failed
        artefact = self.folder / ARTEFACT
        if not artefact.is_file():
            return False, NSErrorStandIn(3, f"load failed: no compiled program in {self.folder}")
        if artefact.read_text() != _digest(self.desc.mil, self._own_files()):
            raise ConformanceViolation(
                f"load would run another program's compiled artefacts from {self.folder}"
            )
        self.loaded = True
        return True, None

    def _do_unloadWithQoS_error_(self, qos: int, err: Any) -> Any:
        if (failed := _fail(self._world, "unloadWithQoS:error:")) is not None:
            return failed
        self.loaded = False
        return True, None

    def _do_evaluateWithQoS_options_request_error_(
        self, qos: int, opts: Any, request: Any, err: Any
    ) -> Any:
        world = self._world
        if (failed := _fail(world, "evaluateWithQoS:options:request:error:")) is not None:
            return failed
        if not self.loaded:
            return False, NSErrorStandIn(5, "evaluate: the model is not loaded")
        if not isinstance(request, RequestObject):
            raise objc_exception("NSInvalidArgumentException", "request is not an _ANERequest")
        request.validate()
        ins, outs = request.inputs, request.outputs
        if any(s.locks for s in (*ins, *outs)):
            raise ConformanceViolation("evaluate while a surface is locked by the CPU")
        too_small = any(s.alloc_size < world.floor for s in (*ins, *outs))
        unequal = len({s.alloc_size for s in ins}) > 1 or len({s.alloc_size for s in outs}) > 1
        if too_small or unequal or (len(ins) > 1 and not world.multi_input):
            world.rejected.append("floor" if too_small else "unequal" if unequal else "inputs")
            return False, NSErrorStandIn(8, STATUS_0X1D)
        by_name = dict(zip(sorted(self.input_names), ins, strict=False))
        if world.executor is not None:  # run the MIL text for real (e.g. in the simulator)
            results = world.executor(self.desc, [bytes(s.memory) for s in ins])
            for dst, data in zip(outs, results, strict=True):
                dst.memory[: len(data)] = data
        else:  # "run" it: the outputs get the bytes of the input the ANE binds by name
            src = by_name.get(world.echo_input or "", ins[0])
            for dst in outs:
                n = min(len(src.memory), len(dst.memory))
                dst.memory[:n] = src.memory[:n]
        if request.stats is not None and self.perf_mask:
            world.hw_ns += 1000
            if world.stats_in_new_objects:  # the firmware fills fresh objects in the array
                request.stats = [PerfStats(world, world.hw_ns) for _ in request.stats]
            for stats in request.stats:
                stats.ns = world.hw_ns
        return True, None


_INPUTS = re.compile(r"func\s+main<\w+>\s*\((.*?)\)\s*\{", re.S)


def _mil_input_names(mil: bytes) -> list[str]:
    match = _INPUTS.search(mil.decode("utf-8", "replace"))
    if not match:
        return []
    return re.findall(r">\s*([A-Za-z_]\w*)", match.group(1))


class RequestClass(ObjCProxy):
    _class_name, _is_class = "_ANERequest", True

    def _do_requestWithInputs_inputIndices_outputs_outputIndices_weightsBuffer_perfStats_procedureIndex_(  # noqa: E501
        self, ins: Any, in_idx: Any, outs: Any, out_idx: Any, wbuf: Any, stats: Any, proc: Any
    ) -> Any:
        world = self._world
        world.perf_stats_args.append(stats)
        if stats is not None and not (
            _is_array(stats) and all(isinstance(s, PerfStats) for s in _items(stats))
        ):
            # dev-erik/maderix: the request calls count on it, an exception on an M4 Max
            raise ConformanceViolation(
                "perfStats must be nil or an array of _ANEPerformanceStats, "
                f"got {type(stats).__name__}"
            )
        inputs, outputs = _items(ins), _items(outs)
        for idx, objs in ((in_idx, inputs), (out_idx, outputs)):
            values = [n.value if isinstance(n, NSNumber) else n for n in _items(idx)]
            if values != list(range(len(objs))):
                raise ConformanceViolation(f"indices {values} for {len(objs)} surfaces")
        for obj in (*inputs, *outputs):
            if not isinstance(obj, SurfaceObject):
                raise ConformanceViolation(f"{type(obj).__name__} is not an _ANEIOSurfaceObject")
        if wbuf is not None:
            raise ConformanceViolation("weightsBuffer: is nil in every working caller")
        request = RequestObject(
            world,
            [o.ref for o in inputs],
            [o.ref for o in outputs],
            None if stats is None else _items(stats),
        )
        world.requests.append(request)
        return request


class RequestObject(ObjCProxy):
    _class_name, _is_class = "_ANERequest", False

    def __init__(self, world: AneWorld, inputs: list, outputs: list, stats: list | None) -> None:
        super().__init__(world)
        self.inputs, self.outputs, self.stats = inputs, outputs, stats

    def validate(self) -> None:
        pass

    def _do_perfStatsArray(self) -> NSArray | None:
        return None if self.stats is None else NSArray(self.stats)


class SurfaceObjectClass(ObjCProxy):
    _class_name, _is_class = "_ANEIOSurfaceObject", True

    def _do_objectWithIOSurface_(self, ref: IOSurfaceRef) -> Any:
        return SurfaceObject(ref)


class SurfaceObject:
    def __init__(self, ref: IOSurfaceRef) -> None:
        self.ref = ref  # the wrapper retains its IOSurface, as the real one does


class PerfStatsClass(ObjCProxy):
    _class_name, _is_class = "_ANEPerformanceStats", True

    def _do_statsWithHardwareExecutionNS_(self, ns: int) -> PerfStats:
        return PerfStats(self._world, ns)


class PerfStats(ObjCProxy):
    _class_name, _is_class = "_ANEPerformanceStats", False

    def __init__(self, world: AneWorld, ns: int) -> None:
        super().__init__(world)
        self.ns = ns

    def _do_hwExecutionTime(self) -> int:
        return self.ns


class DeviceInfoClass(ObjCProxy):
    _class_name, _is_class = "_ANEDeviceInfo", True

    def _do_aneSubType(self) -> str:
        return "h16"


# ---- the world --------------------------------------------------------------------------------


class AneWorld:
    """One stand-in machine: the three modules, the classes, and what happened on it."""

    def __init__(self, root: Path, *, floor: int = 49152, multi_input: bool = False) -> None:
        self.root = root
        self.floor = floor
        self.multi_input = multi_input
        self.metadata: dict[tuple[str, str], dict] = {}
        self.missing_classes: set[str] = set()
        self.raise_at: dict[str, tuple[str, str]] = {}
        self.fail_at: dict[str, NSErrorStandIn | list[NSErrorStandIn]] = {}
        self.fail_once = False
        self.surface_create_fails = False
        self.echo_input: str | None = None
        self.stats_in_new_objects = False
        self.executor: Any = None  # (descriptor, input bytes) -> output bytes
        self.calls: list[str] = []
        self.requests: list[RequestObject] = []
        self.perf_stats_args: list[Any] = []
        self.rejected: list[str] = []
        self.surfaces: list[weakref.ref] = []
        self.compiles = 0
        self.hw_ns = 0
        self.pool_depth = 0
        self.classes: dict[str, Any] = {
            "_ANEInMemoryModelDescriptor": Descriptor(self),
            "_ANEInMemoryModel": InMemoryModelClass(self),
            "_ANERequest": RequestClass(self),
            "_ANEIOSurfaceObject": SurfaceObjectClass(self),
            "_ANEPerformanceStats": PerfStatsClass(self),
            "_ANEDeviceInfo": DeviceInfoClass(self),
        }
        self.objc = make_objc(self)
        self.foundation = make_foundation(self)
        self.iosurface = make_iosurface(self)

    def bridge(self) -> Any:
        """The real bridge, built by the real ``build_bridge`` on these modules."""
        from anetrain.runtime.ane.objc_bridge import build_bridge

        return build_bridge(self.objc, self.foundation, self.iosurface)

    def live_surfaces(self) -> int:
        return sum(1 for ref in self.surfaces if ref() is not None)
