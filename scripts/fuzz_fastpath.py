"""Long differential fuzzing of the simulator's fast path (numba) against its NumPy path.

    python scripts/fuzz_fastpath.py --programs 5000 --seed 1
    python scripts/fuzz_fastpath.py --programs 5000 --elementwise --max-ops 14

Draws random valid programs over every op the simulator plans, inputs with NaN payloads,
subnormals, +-0, +-inf and values around fp16's overflow boundary, and the flush option;
compares every output byte for byte (tests/fastpath_fuzz.py; the suite runs a few hundred).
Prints the counts and the first mismatches with their programs; exit status 1 on any.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-ops", type=int, default=8, help="op generators per program")
    parser.add_argument(
        "--elementwise", action="store_true", help="element-wise chains and views only"
    )
    args = parser.parse_args()
    if args.programs < 1 or args.max_ops < 1:
        parser.error("--programs and --max-ops must be at least 1")
    import fastpath_fuzz  # the harness lives beside the tests that use it
    from anetrain.runtime.sim.fast import fast_available

    ok, reason = fast_available()
    if not ok:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    kinds = fastpath_fuzz.ELEMENTWISE_KINDS if args.elementwise else None
    start = time.perf_counter()
    tally = fastpath_fuzz.fuzz_fast_path(args.programs, args.seed, args.max_ops, kinds)
    print(f"{tally.summary()} ({time.perf_counter() - start:.0f} s)")
    print("ops:", ", ".join(f"{k} {v}" for k, v in sorted(tally.ops.items())))
    for program, what in tally.mismatches[:3]:
        print(f"MISMATCH {what}\n{program}")
    for program, trace in tally.escapes[:3]:
        print(f"ESCAPED {program[:2000]}\n{trace}")
    return 1 if tally.mismatches or tally.escapes else 0


if __name__ == "__main__":
    raise SystemExit(main())
