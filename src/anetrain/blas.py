"""OpenBLAS's AVX-512 kernels on AMD CPUs its detection does not know, chosen before NumPy loads it.

The simulator's time is mostly float32 GEMMs in NumPy's bundled OpenBLAS, which picks its
kernels once, when it is loaded, from the CPU's vendor, family and model. AMD CPUs missing from
its table can fall back to the AVX2 "Haswell" kernels even when the CPU has AVX-512 (the
fallback: OpenMathLib/OpenBLAS#3620; family 26, Zen 5, was missing from the runtime detection
loop until OpenMathLib/OpenBLAS#6033); the Zen 4 CPUs it does know get the AVX-512 "SkylakeX"
kernels (OpenMathLib/OpenBLAS#4303). One-thread ``[256, 288] x [288, 32000]`` sgemm takes 37 ms
with the Haswell kernels and 23-25 ms with the SkylakeX ones on this project's Linux machine, an
AMD EPYC of family 26 (measured; see docs/performance.md). There NumPy 2.4.6's OpenBLAS 0.3.31
already picks SkylakeX by itself (measured: ``threadpoolctl`` reports it with
``ANETRAIN_BLAS_AUTO=0`` and no ``OPENBLAS_CORETYPE``); the Haswell kernels of that machine's
figures come from its environment's ``OPENBLAS_CORETYPE=Haswell``, which this module leaves as
it is. The rule matters for OpenBLAS builds that do not know the CPU.

:func:`select_kernels` runs when :mod:`anetrain` is imported: on an AMD CPU reporting the
AVX-512 subsets the SkylakeX kernels use (F, CD, BW, DQ, VL) it sets ``OPENBLAS_CORETYPE=SkylakeX``,
which OpenBLAS reads at load time. It does nothing when NumPy is already imported (too late:
import :mod:`anetrain` first), when ``OPENBLAS_CORETYPE`` names kernels (the user's choice wins;
an empty value counts as unset, as OpenBLAS reads it), or with ``ANETRAIN_BLAS_AUTO=0``. Child
processes (torchrun ranks, workers) inherit the choice, so every process of a run computes with
the same kernels. Which kernels a process uses changes the
last bits of GEMM results (as BLAS thread counts do), never the simulator's fp16 semantics.

This module imports nothing outside the standard library: it must run before NumPy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

AVX512_KERNELS = "SkylakeX"  # OpenBLAS's AVX-512 target, as OPENBLAS_CORETYPE spells it
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
CPUINFO = "/proc/cpuinfo"

chosen: str | None = None  # what select_kernels set in this process (None: left to OpenBLAS)


def kernels_for(cpuinfo: str, environ: Mapping[str, str], numpy_loaded: bool) -> str | None:
    """The ``OPENBLAS_CORETYPE`` to set for a CPU described by ``cpuinfo`` (/proc/cpuinfo's
    text, its first processor block suffices), or None to leave OpenBLAS's own choice."""
    if not _may_choose(environ, numpy_loaded):
        return None
    vendor, flags = _first_cpu(cpuinfo)
    if vendor != "AuthenticAMD" or not flags >= AVX512_FLAGS:
        return None
    return AVX512_KERNELS


def select_kernels() -> str | None:
    """Set ``OPENBLAS_CORETYPE`` for this process and its children where :func:`kernels_for`
    says so; returns what was set. Runs at every ``import anetrain``: the cheap checks come
    first, and only the first processor block of /proc/cpuinfo is read."""
    global chosen
    numpy_loaded = "numpy" in sys.modules
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return None
    if not _may_choose(os.environ, numpy_loaded):
        return None
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            block = _first_block(f)
    except OSError:
        return None
    core = kernels_for(block, os.environ, numpy_loaded)
    if core is not None:
        os.environ["OPENBLAS_CORETYPE"] = core
        chosen = core
    return core


def _first_block(lines: Iterable[str]) -> str:
    """The lines up to the first blank one after some content (one processor's block)."""
    out: list[str] = []
    for line in lines:
        if not line.strip():
            if out:
                break
            continue
        out.append(line)
    return "".join(out)


def _may_choose(environ: Mapping[str, str], numpy_loaded: bool) -> bool:
    """Not too late, and neither the user's own choice nor an opt-out is set. An empty
    ``OPENBLAS_CORETYPE`` names no kernels (OpenBLAS then detects the CPU as if it were
    unset; measured with 0.3.31), so it is no choice and is replaced like an unset one."""
    user = environ.get("OPENBLAS_CORETYPE", "").strip()
    return not (numpy_loaded or user or environ.get("ANETRAIN_BLAS_AUTO") == "0")


def _first_cpu(cpuinfo: str) -> tuple[str, frozenset[str]]:
    """Vendor id and flags of the first processor block."""
    vendor, flags = "", frozenset[str]()
    for line in _first_block(cpuinfo.splitlines(keepends=True)).splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id":
            vendor = value.strip()
        elif key == "flags":
            flags = frozenset(value.split())
    return vendor, flags
