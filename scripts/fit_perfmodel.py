"""Fit the ANE performance model to the reference tables, cross-validate it, and write its
parameters and the generated section of docs/perfmodel.md.

    python scripts/fit_perfmodel.py            # fit + leave-one-table-out CV, write both files
    python scripts/fit_perfmodel.py --check    # print only; write nothing
    python scripts/fit_perfmodel.py --no-scipy --out params.json --docs docs/perfmodel.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from anetrain.fsutil import atomic_write
from anetrain.perfmodel import fit as fitting
from anetrain.perfmodel.reference import reference_rows
from anetrain.perfmodel.report import markdown, params_document, splice

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "anetrain" / "perfmodel" / "params.json"
DEFAULT_DOCS = ROOT / "docs" / "perfmodel.md"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parameters file to write")
    ap.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="markdown to update")
    ap.add_argument("--no-docs", action="store_true", help="do not touch the markdown")
    ap.add_argument("--check", action="store_true", help="print the fit, write nothing")
    ap.add_argument("--no-scipy", action="store_true", help="use the NumPy optimizer")
    return ap.parse_args(argv)


def command_line(args: argparse.Namespace) -> str:
    parts = ["python", "scripts/fit_perfmodel.py"]
    if args.no_scipy:
        parts.append("--no-scipy")
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = reference_rows()
    use_scipy = False if args.no_scipy else None
    result = fitting.fit(rows, use_scipy=use_scipy)
    folds = fitting.cross_validate(rows, use_scipy=use_scipy)
    command = command_line(args)
    for f in folds:
        print(
            f"held out {f.group:<22} median {f.metrics.median_abs_pct:5.1f}%  "
            f"max {f.metrics.max_abs_pct:5.1f}%"
        )
    print(json.dumps({"fit": result.metrics.to_dict(), "at_bound": result.at_bound}))
    if args.check:
        return 0
    doc = params_document(result, command)
    atomic_write(args.out, (json.dumps(doc, indent=2) + "\n").encode())
    print(f"wrote {args.out}", file=sys.stderr)
    if not args.no_docs:
        old = args.docs.read_text(encoding="utf-8") if args.docs.exists() else ""
        atomic_write(args.docs, splice(old, markdown(result, folds, command)).encode())
        print(f"updated {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
