"""anetrain.blas: OpenBLAS's AVX-512 kernels chosen on AMD CPUs with AVX-512, nothing otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from anetrain.blas import AVX512_FLAGS, CPUINFO, kernels_for

AVX512 = " ".join(sorted(AVX512_FLAGS))


def cpuinfo(vendor: str, flags: str, cpus: int = 2) -> str:
    block = (
        f"processor\t: {{i}}\nvendor_id\t: {vendor}\ncpu family\t: 26\n"
        f"flags\t\t: fpu sse2 avx2 fma {flags}\n"
    )
    return "\n".join(block.format(i=i) for i in range(cpus))


def test_an_amd_cpu_with_avx512_gets_the_avx512_kernels() -> None:
    assert kernels_for(cpuinfo("AuthenticAMD", AVX512), {}, numpy_loaded=False) == "SkylakeX"


@pytest.mark.parametrize("missing", sorted(AVX512_FLAGS))
def test_every_avx512_subset_the_kernels_use_is_required(missing: str) -> None:
    flags = " ".join(sorted(AVX512_FLAGS - {missing}))
    assert kernels_for(cpuinfo("AuthenticAMD", flags), {}, numpy_loaded=False) is None


def test_intel_cpus_and_avx2_only_cpus_keep_openblas_own_choice() -> None:
    assert kernels_for(cpuinfo("GenuineIntel", AVX512), {}, numpy_loaded=False) is None
    assert kernels_for(cpuinfo("AuthenticAMD", ""), {}, numpy_loaded=False) is None
    assert kernels_for("", {}, numpy_loaded=False) is None


def test_the_users_choice_an_opt_out_or_a_loaded_numpy_win() -> None:
    info = cpuinfo("AuthenticAMD", AVX512)
    assert kernels_for(info, {"OPENBLAS_CORETYPE": "Haswell"}, numpy_loaded=False) is None
    assert kernels_for(info, {"ANETRAIN_BLAS_AUTO": "0"}, numpy_loaded=False) is None
    assert kernels_for(info, {}, numpy_loaded=True) is None  # too late to matter


def test_an_empty_coretype_is_no_choice_and_is_replaced() -> None:
    """OpenBLAS ignores an empty OPENBLAS_CORETYPE (it detects the CPU itself), so an empty
    value must not stop the choice the way a user's kernel name does."""
    info = cpuinfo("AuthenticAMD", AVX512)
    for empty in ("", " "):
        assert kernels_for(info, {"OPENBLAS_CORETYPE": empty}, numpy_loaded=False) == "SkylakeX"
    assert kernels_for(cpuinfo("GenuineIntel", AVX512), {"OPENBLAS_CORETYPE": ""}, False) is None


def test_only_the_first_processor_block_is_read() -> None:
    info = cpuinfo("AuthenticAMD", "", cpus=1) + "\n\n" + cpuinfo("AuthenticAMD", AVX512, cpus=1)
    assert kernels_for(info, {}, numpy_loaded=False) is None


PROBE = """
import json, anetrain, anetrain.blas, numpy
from threadpoolctl import threadpool_info
blas = [i for i in threadpool_info() if i["internal_api"] == "openblas"]
arch = blas[0]["architecture"] if blas else None
print(json.dumps({"chosen": anetrain.blas.chosen, "arch": arch}))
"""


def probe(env: dict[str, str]) -> dict[str, str | None]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_a_fresh_process_loads_the_kernels_it_chose() -> None:
    """In a fresh interpreter (NumPy not loaded yet) the choice reaches OpenBLAS; with the user's
    own OPENBLAS_CORETYPE nothing is chosen and OpenBLAS follows the user."""
    mine = ("OPENBLAS_CORETYPE", "ANETRAIN_BLAS_AUTO")
    env = {k: v for k, v in os.environ.items() if k not in mine}
    got = probe(env)
    if got["arch"] is None or sys.platform != "linux":
        pytest.skip("NumPy is not linked against OpenBLAS here, or no /proc/cpuinfo")
    with open(CPUINFO) as f:
        expected = kernels_for(f.read(), env, numpy_loaded=False)
    assert got["chosen"] == expected
    if expected is not None:
        assert got["arch"].lower() == expected.lower()
    user = probe({**env, "OPENBLAS_CORETYPE": "Haswell"})
    assert user == {"chosen": None, "arch": "Haswell"}
