"""``anetrain perfmodel fit``: fit a chip's performance-model parameters to bench JSON files.

anetrain bench suite --json m4max.json              # once, on the Mac
anetrain perfmodel fit m4max.json --out m4max-profile.json
anetrain bench peak --backend sim --chip-profile m4max-profile.json   # anywhere
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from anetrain.commands.args import file_path
from anetrain.commands.chipargs import chip_name


def register(sub: argparse._SubParsersAction) -> None:
    pm = sub.add_parser("perfmodel", help="fit the ANE performance model to bench results")
    actions = pm.add_subparsers(dest="perfmodel_command", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit",
        help="fit a chip profile to 'anetrain bench --json' (or community schema) files",
        description="Fit the performance model's engine parameters (on-chip feeds, per-op "
        "cost, DRAM share) and the machine's dispatch and floor to the timed rows of one or "
        "more bench JSON files, and write a chip profile for --chip-profile.",
    )
    fit.add_argument("files", nargs="+", type=file_path, metavar="FILE", help="bench JSON files")
    fit.add_argument("--out", type=file_path, required=True, metavar="PROFILE.json")
    fit.add_argument(
        "--chip", type=chip_name, help="chip the files were measured on (default: as they say)"
    )
    fit.add_argument("--no-scipy", action="store_true", help="use the NumPy optimizer")
    fit.set_defaults(handler=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from anetrain.fsutil import atomic_write
    from anetrain.perfmodel import fit as fitting
    from anetrain.perfmodel.benchfile import load_bench_files
    from anetrain.perfmodel.params import PerfModelError, profile_document

    rows = load_bench_files(args.files, args.chip)
    chips = sorted({r.chip for r in rows})
    if len(chips) != 1:
        raise PerfModelError(
            f"the files are from several chips ({', '.join(chips)}); fit one chip at a time "
            "or pass --chip"
        )
    result = fitting.fit(rows, use_scipy=False if args.no_scipy else None)
    files = ", ".join(p.name for p in args.files)
    params = replace(result.params[chips[0]], source=f"anetrain perfmodel fit {files}")
    m = result.metrics
    print(
        f"fitted {chips[0]} to {m.rows} rows from {len(args.files)} file(s): median |error| "
        f"{m.median_abs_pct:.1f}%, max {m.max_abs_pct:.1f}%"
        + (f"; at a bound of its range: {', '.join(result.at_bound)}" if result.at_bound else "")
    )
    for key in ("dispatch_us", "floor_us", "per_op_us", "sram_gbps", "big_op_gbps", "dram_gbps"):
        print(f"  {key:<12} {getattr(params, key):.4g}")
    fit_info = {**m.to_dict(), "method": result.method, "at_bound": list(result.at_bound)}
    doc = profile_document(params, fit_info, [str(p) for p in args.files])
    atomic_write(args.out, (json.dumps(doc, indent=2) + "\n").encode())
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
