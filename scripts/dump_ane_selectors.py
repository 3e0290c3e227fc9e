"""Dump the Objective-C type encodings of the private ANE classes' methods (run on a Mac).

    python scripts/dump_ane_selectors.py [--json FILE] [--all] [CLASS ...]

Loads AppleNeuralEngine.framework with ctypes (no PyObjC needed), lists every class and
instance method of the classes in src/anetrain/runtime/ane/selectors.json (or the ones named)
with its type encoding, and compares the selectors the ane backend uses against the table:
argument count and kinds. Exit status 1 if a selector is missing or differs, so the output is
what to paste into a bug report, and the JSON is what to regenerate the table from.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
from typing import Any

from anetrain.runtime.ane import selectors as sels
from anetrain.runtime.ane.objc_bridge import FRAMEWORK, platform_problem


def _libobjc() -> ctypes.CDLL:
    lib = ctypes.CDLL("/usr/lib/libobjc.A.dylib")
    lib.objc_getClass.restype = ctypes.c_void_p
    lib.objc_getClass.argtypes = [ctypes.c_char_p]
    lib.object_getClass.restype = ctypes.c_void_p
    lib.object_getClass.argtypes = [ctypes.c_void_p]
    lib.class_copyMethodList.restype = ctypes.POINTER(ctypes.c_void_p)
    lib.class_copyMethodList.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint)]
    lib.method_getName.restype = ctypes.c_void_p
    lib.method_getName.argtypes = [ctypes.c_void_p]
    lib.sel_getName.restype = ctypes.c_char_p
    lib.sel_getName.argtypes = [ctypes.c_void_p]
    lib.method_getTypeEncoding.restype = ctypes.c_char_p
    lib.method_getTypeEncoding.argtypes = [ctypes.c_void_p]
    return lib


def _methods(lib: ctypes.CDLL, cls: int) -> dict[str, str]:
    count = ctypes.c_uint()
    listing = lib.class_copyMethodList(cls, ctypes.byref(count))
    out = {}
    for i in range(count.value):
        method = listing[i]
        name = lib.sel_getName(lib.method_getName(method)).decode()
        out[name] = (lib.method_getTypeEncoding(method) or b"").decode()
    ctypes.CDLL(None).free(listing)
    return out


def dump(class_names: list[str]) -> dict[str, Any]:
    lib = _libobjc()
    ctypes.CDLL(FRAMEWORK, mode=ctypes.RTLD_GLOBAL)
    classes: dict[str, Any] = {}
    for name in class_names:
        cls = lib.objc_getClass(name.encode())
        if not cls:
            classes[name] = None
            continue
        meta = lib.object_getClass(cls)
        methods = {f"+{k}": v for k, v in _methods(lib, meta).items()}
        methods.update({f"-{k}": v for k, v in _methods(lib, cls).items()})
        classes[name] = dict(sorted(methods.items()))
    return {"macos": platform.mac_ver()[0], "machine": platform.machine(), "classes": classes}


def compare(found: dict[str, Any]) -> list[str]:
    """Problems with the table's selectors on this machine (empty: all match)."""
    problems: list[str] = []
    for sel in sels.selectors():
        methods = found["classes"].get(sel.cls)
        key = f"{'+' if sel.class_method else '-'}{sel.selector}"
        if methods is None:
            missing = f"class {sel.cls} is missing"
            if missing not in problems:
                problems.append(missing)
            continue
        if key not in methods:
            problems.append(f"{sel.cls} {key} is missing")
            continue
        returns, args = sels.encoding_kinds(methods[key])
        want = tuple(sels.encoded_kind(k) for k in sel.args)
        if args != want or sels.encoded_kind(sel.returns) != returns:
            problems.append(
                f"{sel.cls} {key}: encoding {methods[key]!r} gives {returns} {args}, the table "
                f"says {sel.returns} {want}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("classes", nargs="*", help="classes to dump (default: the table's)")
    p.add_argument("--json", metavar="FILE", help="write the dump to FILE")
    args = p.parse_args(argv)
    problem = platform_problem()
    if problem:
        print(f"dump_ane_selectors: {problem}", file=sys.stderr)
        return 2
    names = args.classes or sorted({s.cls for s in sels.selectors()})
    found = dump(names)
    text = json.dumps(found, indent=2)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    problems = compare(found)
    for line in problems:
        print(f"MISMATCH {line}", file=sys.stderr)
    print(f"{len(problems)} mismatch(es) against selectors.json", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
