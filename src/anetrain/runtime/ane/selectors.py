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
