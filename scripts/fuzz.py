"""Long fuzzing runs: mutated MIL programs, MILBlob files and checkpoints.

    python scripts/fuzz.py --mil 20000 --blob 50000 --checkpoint 10000 --seed 1

Prints, per reader, the inputs tried, how many were accepted, refused with a typed error, or
escaped with any other exception (a bug: the first few are printed with their traceback).
The suite runs the same harness (tests/fuzzing.py) with small counts; figures from long runs
go in docs/robustness.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # the harness lives beside the tests that use it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mil", type=int, default=20000, help="mutated MIL programs")
    parser.add_argument("--blob", type=int, default=50000, help="mutated MILBlob files")
    parser.add_argument("--checkpoint", type=int, default=10000, help="mutated checkpoints")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sim", action="store_true", help="parse and validate MIL only")
    args = parser.parse_args()
    escaped = 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "MIL text": lambda: fuzzing.fuzz_mil(args.mil, args.seed, simulate=not args.no_sim),
            "MILBlob": lambda: fuzzing.fuzz_blob(args.blob, args.seed),
            "checkpoint": lambda: fuzzing.fuzz_checkpoint(args.checkpoint, Path(tmp), args.seed),
        }
        for name, run in runs.items():
            start = time.perf_counter()
            tally = run()
            print(f"{name:10s} {tally.summary()} ({time.perf_counter() - start:.0f} s)")
            for sample, trace in tally.escapes[:3]:
                print(f"  escaped on {sample[:200]}\n{trace}")
            escaped += tally.escaped
    return 1 if escaped else 0


if __name__ == "__main__":
    raise SystemExit(main())
