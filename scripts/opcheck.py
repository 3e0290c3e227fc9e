"""Long seeded differential run of the simulator against coremltools (thousands of cases per op).

    python scripts/opcheck.py                         # 3000 cases per op, 5000 view chains
    python scripts/opcheck.py --cases 200 --ops conv matmul --chains 0
    python scripts/opcheck.py --start 100000          # other seeds than the suite's (0..59)

Prints one row per op (cases, compared by value, both reject, documented differences by key,
disagreements) and the first disagreements in full; exits 1 if any case disagrees. The suite
runs the same checks on a few dozen seeds per op (tests/test_runtime_opcheck.py); the figures
of a full run are recorded in docs/runtime.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from anetrain.runtime.opcheck import GENERATORS, check_case, check_chain, draw_case


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3000, help="cases per op")
    ap.add_argument("--chains", type=int, default=5000, help="random view chains")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--ops", nargs="*", default=sorted(GENERATORS), choices=sorted(GENERATORS))
    ap.add_argument("--show", type=int, default=5, help="disagreements to print in full")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seeds = range(args.start, args.start + args.cases)
    failures: list[str] = []
    totals: Counter[str] = Counter()
    started = time.perf_counter()
    print("| op | cases | compared | both reject | documented | disagree |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for op in args.ops:
        counts: Counter[str] = Counter()
        documented: Counter[str] = Counter()
        for seed in seeds:
            outcome = check_case(draw_case(op, seed))
            counts[outcome.verdict] += 1
            if outcome.difference is not None:
                documented[outcome.difference.key] += 1
            if not outcome.ok:
                failures.append(f"seed {seed}: {outcome}")
        totals.update(counts)
        docs = ", ".join(f"{k} {n}" for k, n in documented.most_common()) or "-"
        print(
            f"| {op} | {args.cases} | {counts['agree']} | {counts['both_reject']} | {docs} | "
            f"{counts['disagree']} |"
        )
    chain_bad = 0
    for seed in range(args.start, args.start + args.chains):
        outcome = check_chain(seed)
        if not outcome.ok:
            chain_bad += 1
            failures.append(f"chain seed {seed}: {outcome}")
    if args.chains:
        print(f"| view chains | {args.chains} | {args.chains - chain_bad} | - | - | {chain_bad} |")
    elapsed = time.perf_counter() - started
    cases = sum(totals.values()) + args.chains
    print(f"\n{cases} cases in {elapsed:.0f} s; {len(failures)} disagreement(s)")
    for line in failures[: args.show]:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
