"""Comments and docs stand on their own: no citation of files that are not in the repository.

The project was built from private notes (an inventory of maderix/ANE, notes on its peers, this
machine's measurements). A citation such as "<notes> section 4.2" means nothing to a reader of the
repository; the fact must be stated with its public source (project, file, issue or paper).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["src", "tests", "docs", "scripts", "benchmarks", "README.md"]
SUFFIXES = {".py", ".md", ".json", ".toml", ".txt", ".mil", ".sh"}
# names of the private notes, split so that this file does not match itself
PRIVATE = [
    "seed" + "-inventory",
    "peers" + ".md",
    "feasibility" + ".md",
    "style" + "-anchors",
    "ane-m4max-" + "measurements",
    "ane-cross-chip-" + "peaks",
    "reference" + " files",
]
PATTERN = re.compile(
    "|".join([re.escape(p) for p in PRIVATE] + ["\u00a7", r"\bseed \d+\.\d"]), re.I
)


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*"))
    return [
        f for f in files if f.is_file() and f.suffix in SUFFIXES and "__pycache__" not in f.parts
    ]


def test_no_citation_of_files_outside_the_repository() -> None:
    hits = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()[:90]}"
        for f in scanned_files()
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if PATTERN.search(line)
    ]
    assert not hits, "state the fact and its public source instead:\n" + "\n".join(hits)


def test_the_scan_sees_the_repository() -> None:
    names = {f.name for f in scanned_files()}
    assert {"README.md", "chips.json", "seed_mil.py", "runtime.md"} <= names
