"""The checked-in table of private selectors (``selectors.json``): one place for their shapes.

The bridge derives its PyObjC out-parameter metadata from it, the conformance stand-ins enforce
it, and ``scripts/dump_ane_selectors.py`` regenerates the type encodings from a real Mac.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

ERROR_OUT = "NSError**"
_STATUS = re.compile(r"\bstatus\s*[=:]\s*(0x[0-9a-fA-F]+|\d+)")
_STATUS_TYPE = re.compile(r"\bstatusType\s*[=:]\s*(0x[0-9a-fA-F]+|\d+)")


@dataclass(frozen=True)
class Selector:
    """One method: ``+`` class or ``-`` instance, its ObjC selector, argument kinds, return."""

    cls: str
    class_method: bool
    selector: str
    args: tuple[str, ...]
    nullable: frozenset[int]
    returns: str
    source: str

    @property
    def python_name(self) -> str:
        """PyObjC's name: every ``:`` becomes ``_``."""
        return self.selector.replace(":", "_")

    def error_out_index(self) -> int | None:
        """PyObjC metadata index of the ``NSError **`` argument (self=0, _cmd=1, first=2)."""
        for i, kind in enumerate(self.args):
            if kind == ERROR_OUT:
                return i + 2
        return None


@cache
def _data() -> dict[str, Any]:
    text = resources.files("anetrain.runtime.ane").joinpath("selectors.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def selectors() -> tuple[Selector, ...]:
    out = []
    for cls, entry in _data()["classes"].items():
        for key, method in entry["methods"].items():
            sel = key[1:]
            if sel.count(":") != len(method["args"]):
                raise ValueError(f"selectors.json: {cls} {key} lists {len(method['args'])} args")
            out.append(
                Selector(
                    cls=cls,
                    class_method=key.startswith("+"),
                    selector=sel,
                    args=tuple(method["args"]),
                    nullable=frozenset(method.get("nullable", ())),
                    returns=method["returns"],
                    source=method["source"],
                )
            )
    return tuple(out)


def lookup(cls: str, selector: str) -> Selector:
    for sel in selectors():
        if sel.cls == cls and sel.selector == selector:
            return sel
    raise KeyError(f"{cls} {selector} is not in selectors.json")


def required_classes() -> tuple[str, ...]:
    return tuple(c for c, e in _data()["classes"].items() if e["required"])


def optional_classes() -> tuple[str, ...]:
    return tuple(c for c, e in _data()["classes"].items() if not e["required"])


def perf_stats_mask() -> int:
    return int(_data()["perf_stats_mask"]["value"])


def parse_status(*texts: str) -> tuple[int | None, int | None]:
    """``(status, statusType)`` from NSError texts like ``Failed with status=0x1d :
    statusType=0x9: Program Inference error``; the codes are in the text, not in ``code``."""
    status = status_type = None
    for text in texts:
        if status is None and (m := _STATUS.search(text)):
            status = int(m.group(1), 0)
        if status_type is None and (m := _STATUS_TYPE.search(text)):
            status_type = int(m.group(1), 0)
    return status, status_type


def explain_status(status: int | None, status_type: int | None) -> str:
    """What the table knows about a status / statusType pair ('' if nothing)."""
    parts = []
    if status is not None and (text := _data()["statuses"].get(f"0x{status:x}")):
        parts.append(f"status 0x{status:x}: {text}")
    if status_type is not None and (text := _data()["status_types"].get(f"0x{status_type:x}")):
        parts.append(f"statusType 0x{status_type:x}: {text}")
    return "; ".join(parts)


# ---- Objective-C type encodings (for scripts/dump_ane_selectors.py) -------------------------

_QUALIFIERS = "rnNoORV"
_SIMPLE = {
    "c": "BOOL",  # BOOL is signed char on some ABIs
    "B": "BOOL",
    "v": "void",
    "I": "uint32",
    "Q": "uint64",
    "i": "int32",
    "q": "int64",
    "@": "object",
    "#": "Class",
    ":": "SEL",
}


def split_encoding(encoding: str) -> list[str]:
    """``"B40@0:8I16@20^@28"`` -> ``["B", "@", ":", "I", "@", "^@"]`` (offsets dropped)."""
    out: list[str] = []
    i = 0
    while i < len(encoding):
        start = i
        while i < len(encoding) and encoding[i] in _QUALIFIERS:
            i += 1
        i = _skip_type(encoding, i)
        out.append(encoding[start:i].lstrip(_QUALIFIERS))
        while i < len(encoding) and encoding[i].isdigit():
            i += 1
    return out


def _skip_type(enc: str, i: int) -> int:
    ch = enc[i]
    if ch == "^":
        return _skip_type(enc, i + 1)
    if ch in "{([":
        close = {"{": "}", "(": ")", "[": "]"}[ch]
        depth = 0
        while i < len(enc):
            if enc[i] == ch:
                depth += 1
            elif enc[i] == close:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        raise ValueError(f"unbalanced type encoding {enc!r}")
    if ch == "@" and i + 1 < len(enc) and enc[i + 1] == '"':
        return enc.index('"', i + 2) + 1
    return i + 1


def kind_of(token: str) -> str:
    """The table's kind for one encoded type (``"^@"`` -> ``"NSError**"``)."""
    if token == "^@":
        return ERROR_OUT
    if token.startswith("^{__IOSurface"):
        return "IOSurfaceRef"
    if token.startswith("@"):
        return "object"
    return _SIMPLE.get(token, token)


def encoding_kinds(encoding: str) -> tuple[str, tuple[str, ...]]:
    """``(return kind, argument kinds)`` of a method encoding, without self and _cmd."""
    tokens = split_encoding(encoding)
    return kind_of(tokens[0]), tuple(kind_of(t) for t in tokens[3:])


def encoded_kind(kind: str) -> str:
    """What a table kind looks like in an encoding (the NS classes are all ``object``)."""
    return "object" if kind.startswith("NS") and kind != ERROR_OUT else kind
