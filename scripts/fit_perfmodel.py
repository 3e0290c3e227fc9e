"""Fit the ANE performance model to the measured M4 Max rows and write its parameters.

    python scripts/fit_perfmodel.py                    # fit, write params.json + docs table
    python scripts/fit_perfmodel.py --check            # fit and print only; write nothing
    python scripts/fit_perfmodel.py --reference FILE --out params.json --docs docs/perfmodel.md

Uses SciPy's least_squares when installed (``--no-scipy`` forces the NumPy fallback). The
SRAM capacity is searched within ``--sram-range`` MiB (default: the probes' 24-32 MiB
estimate; ``--sram-range 8 128`` lets the data place the cliff freely, see docs/perfmodel.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from anetrain.perfmodel import fit as fitting
from anetrain.perfmodel.reference import load_reference, reference_rows
from anetrain.perfmodel.report import markdown, params_document, splice

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "anetrain" / "perfmodel" / "params.json"
DEFAULT_DOCS = ROOT / "docs" / "perfmodel.md"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="measurements JSON (default: packaged copy)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parameters file to write")
    ap.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="markdown to update")
    ap.add_argument("--no-docs", action="store_true", help="do not touch the markdown")
    ap.add_argument("--check", action="store_true", help="print the fit, write nothing")
    ap.add_argument("--no-scipy", action="store_true", help="use the NumPy optimizer")
    ap.add_argument(
        "--sram-range",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=fitting.SRAM_RANGE_MIB,
        help="MiB range searched for the SRAM capacity (default: %(default)s)",
    )
    return ap.parse_args(argv)


def command_line(args: argparse.Namespace) -> str:
    parts = ["python", "scripts/fit_perfmodel.py"]
    if args.reference is not None:
        parts += ["--reference", str(args.reference)]
    if args.no_scipy:
        parts.append("--no-scipy")
    if tuple(args.sram_range) != fitting.SRAM_RANGE_MIB:
        parts += ["--sram-range", *(f"{v:g}" for v in args.sram_range)]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = reference_rows(load_reference(args.reference))
    result = fitting.fit(
        rows, use_scipy=False if args.no_scipy else None, sram_range=tuple(args.sram_range)
    )
    command = command_line(args)
    for e in result.errors:
        print(
            f"{e.group:<18} {e.label:<28} measured {e.measured_ms:8.3f} ms  "
            f"predicted {e.predicted_ms:8.3f} ms  {e.pct:+7.1f}%"
        )
    print(json.dumps({"params": result.params.to_dict(), "fit": result.metrics.to_dict()}))
    if args.check:
        return 0
    doc = params_document(result, command)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    if not args.no_docs:
        old = args.docs.read_text(encoding="utf-8") if args.docs.exists() else ""
        args.docs.write_text(splice(old, markdown(result, command)) + "", encoding="utf-8")
        print(f"updated {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
