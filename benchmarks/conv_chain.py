"""Simulator speed bar: a chain of 1x1 convs vs the same matmuls in plain float32 NumPy.

The simulator rounds every conv output to fp16 and converts surfaces at the boundary; the
baseline only runs ``np.matmul`` into preallocated buffers. One sim eval and one baseline chain
alternate ``--samples`` times in one process (this 2-vCPU VM is noisy: alternating puts both
under the same noise) and the ratio of the medians is printed, with the ratio of the minima as
a noise-free cross-check. The bar is ratio <= 1.1 (on the fast path; ANETRAIN_SIM_FAST=0 times
the NumPy reference path).

    python benchmarks/conv_chain.py [--depth 64] [--channels 512] [--spatial 64] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--spatial", type=int, default=64)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: as-is)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = ap.parse_args()
    sizes = {"--depth": args.depth, "--channels": args.channels, "--spatial": args.spatial}
    for flag, value in {**sizes, "--samples": args.samples}.items():
        if value < 1:
            ap.error(f"{flag} must be at least 1, got {value}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    return args


def build(depth: int, ch: int, sp: int, seed: int = 0) -> tuple[Any, dict, list, Any]:
    import numpy as np

    from anetrain.mil import FP16, Builder
    from anetrain.mil.blob import BlobWriter

    rng = np.random.default_rng(seed)
    weights = [
        (rng.standard_normal((ch, ch)) / np.sqrt(ch)).astype(np.float16) for _ in range(depth)
    ]
    writer = BlobWriter()
    offsets = [writer.add(w.reshape(ch, ch, 1, 1)) for w in weights]
    b = Builder("ios18")
    y = b.input("x", FP16, [1, ch, 1, sp])
    for i, off in enumerate(offsets):
        w = b.weight(f"W{i}", FP16, [ch, ch, 1, 1], "chain.bin", off)
        y = b.conv(y, w, name=f"c{i}")
    b.returns(y)
    blobs = {"@model_path/weights/chain.bin": writer.to_bytes()}
    x = rng.standard_normal((ch, sp)).astype(np.float32)
    return b.program(), blobs, weights, x


def main() -> None:
    args = parse()
    if args.threads is not None:  # must precede the first numpy import
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    from anetrain import runtime

    program, blobs, weights, x = build(args.depth, args.channels, args.spatial)
    kernel = runtime.compile(program, blobs, backend="sim", chip="m4")
    kernel.input.write(x)

    w32 = [w.astype(np.float32) for w in weights]
    bufs = [np.empty((args.channels, args.spatial), np.float32) for _ in range(2)]
    x32 = kernel.input.read()

    def baseline() -> None:
        src = x32
        for i, w in enumerate(w32):
            dst = bufs[i % 2]
            np.matmul(w, src, out=dst)
            src = dst

    for _ in range(3):  # warm up caches and BLAS threads
        kernel.eval()
        baseline()
    sim_t, base_t = [], []
    for _ in range(args.samples):
        t0 = time.perf_counter()
        kernel.eval()
        t1 = time.perf_counter()
        baseline()
        t2 = time.perf_counter()
        sim_t.append(t1 - t0)
        base_t.append(t2 - t1)
    sim_ms, base_ms = statistics.median(sim_t) * 1e3, statistics.median(base_t) * 1e3
    gflop = 2 * args.channels**2 * args.spatial * args.depth / 1e9
    result = {
        "depth": args.depth,
        "channels": args.channels,
        "spatial": args.spatial,
        "blas_threads": args.threads or os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "sim_ms": round(sim_ms, 3),
        "numpy_fp32_ms": round(base_ms, 3),
        "ratio": round(sim_ms / base_ms, 3),
        "ratio_of_minima": round(min(sim_t) / min(base_t), 3),
        "sim_gflops": round(gflop / (sim_ms / 1e3), 1),
        "sim_path": "fast" if kernel.plan.fast is not None else "numpy",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"conv chain depth={args.depth} ch={args.channels} sp={args.spatial} "
            f"(BLAS threads: {result['blas_threads']}, sim path: {result['sim_path']}): "
            f"sim {sim_ms:.2f} ms/eval, numpy fp32 "
            f"{base_ms:.2f} ms -> ratio {result['ratio']:.2f} (bar <= 1.1; ratio of minima "
            f"{result['ratio_of_minima']:.2f}); sim {result['sim_gflops']} GFLOPS"
        )


if __name__ == "__main__":
    main()
