"""Each ane defect of issue 16, reintroduced into a copy of the package, fails a conformance test.

Slow (one pytest run per defect): ``python -m pytest -m slow tests/test_ane_mutations.py``.
The mutations are applied to a temporary copy of ``src/anetrain``, never to the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
ANE = "runtime/ane"

# defect -> (file, text as fixed, text with the defect back, a test that must then fail)
MUTATIONS = {
    "1 perfStats: a bare object by default": [
        (f"{ANE}/backend.py", "perf_stats: bool = False,", "perf_stats: bool = True,"),
        (
            f"{ANE}/objc_bridge.py",
            "stats = None if perf_stats is None else self._array([perf_stats])",
            "stats = perf_stats",
        ),
        "test_perf_stats_are_nil_by_default",
    ],
    "2 ObjC exceptions escape the mapping": [
        (
            f"{ANE}/objc_bridge.py",
            "except Exception as exc:  # objc.error",
            "except ZeroDivisionError as exc:  # objc.error",
        ),
        "test_objc_exceptions_become_typed_errors_naming_the_selector",
    ],
    "3 status read from the NSError code": [
        (
            f"{ANE}/objc_bridge.py",
            "status, status_type = sels.parse_status(text, _text(err.description), info)",
            "status, status_type = code, None",
        ),
        "test_status_0x1d_with_several_inputs_is_a_multi_input_error",
    ],
    "4 surfaces of exactly nbytes": [
        (
            f"{ANE}/iosurface.py",
            "need = max([floor, *(s.nbytes for s in specs)])",
            "need = max(s.nbytes for s in specs) or floor",
        ),
        (f"{ANE}/iosurface.py", "return -(-need // PAGE_BYTES) * PAGE_BYTES", "return need"),
        "test_surfaces_are_allocated_at_least_at_the_floor_and_page_rounded",
    ],
    "5 unload deletes the model folder": [
        (
            f"{ANE}/backend.py",
            "                stacklevel=3,\n            )\n\n    def _load",
            "                stacklevel=3,\n            )\n        self._release_folder()\n\n"
            "    def _load",
        ),
        "test_load_after_unload_reuses_the_folder_without_compiling",
    ],
    "6 folders shared whatever the weight bytes": [
        (
            f"{ANE}/modeldir.py",
            "if self._holds.get(path) == digest and",
            "if path in self._holds and",
        ),
        "test_same_text_different_weights_never_share_stale_files",
    ],
    "7 inputs bound in declaration order": [
        (f"{ANE}/backend.py", "sorted(pairs, key=lambda p: p[0])", "pairs"),
        "test_several_inputs_are_ordered_by_name_with_equal_sizes",
    ],
    "7 unequal input allocation sizes": [
        (
            f"{ANE}/backend.py",
            "        if spec in self.input_specs:\n            return self._input_alloc",
            "        if spec in self.input_specs:\n"
            "            return surface_alloc_bytes([spec], self.chip.min_surface_bytes)",
        ),
        "test_several_inputs_are_ordered_by_name_with_equal_sizes",
    ],
    "8 views hold only the varlist": [
        (
            f"{ANE}/iosurface.py",
            "memory = np.asarray(bridge.surface_memory(self.iosurface, self.alloc_bytes))",
            "memory = bridge.surface_memory(self.iosurface, self.alloc_bytes)._view",
        ),
        "test_numpy_views_keep_the_iosurface_alive",
    ],
    "9 no chip-profile preflight on ane": [
        (
            "runtime/backend.py",
            "        enforce(prog, self.chip, name or prog.main.name)",
            "        if self.name == 'sim':\n"
            "            enforce(prog, self.chip, name or prog.main.name)",
        ),
        "test_programs_the_chip_cannot_run_fail_before_any_bridge_call",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("defect", list(MUTATIONS))
def test_reintroduced_defect_fails_a_conformance_test(defect: str, tmp_path: Path) -> None:
    *edits, must_fail = MUTATIONS[defect]
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "anetrain", src / "anetrain")
    for rel, fixed, broken in edits:
        path = src / "anetrain" / rel
        text = path.read_text(encoding="utf-8")
        assert text.count(fixed) == 1, f"{defect}: the fixed text is not in {rel} exactly once"
        path.write_text(text.replace(fixed, broken), encoding="utf-8")
    tests = ["tests/test_ane_binding_conformance.py", "tests/test_runtime_ane_import.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
        check=False,
    )
    assert done.returncode != 0, f"{defect}: every conformance test still passes"
    assert f"::{must_fail}" in done.stdout, done.stdout[-2000:]
