"""Data-parallel step time: one process vs 2 ranks under torchrun, on this machine, same run.

    python benchmarks/data_parallel.py [--model tiny] [--steps 40] [--windows 4] [--rounds 2]

Runs ``anetrain train`` (sim backend) with the same effective batch three ways: one process
with ``--windows`` windows per step; 2 ranks with half each (the gradient summed after the
backward, in buckets); the same with ``--dist-overlap`` (each layer's sum started during the
backward). Rounds alternate the three to share the machine's noise; figures are medians over
the steps after the first five. ``all-reduce`` is the time a step waited for communication,
which includes waiting for the slower rank. A last run times the bare gloo all-reduce of the
model's gradient buffer on 2 idle ranks (the communication itself). Loopback only
(127.0.0.1, gloo on the loopback interface).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anetrain.train.distributed import loopback_launcher

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.update(loopback_launcher(1)[1])
    return env


def _torchrun(nproc: int) -> list[str]:
    return loopback_launcher(nproc)[0]


WARMUP_STEPS = 5  # first steps of each run left out of its medians


def run_train(args: argparse.Namespace, ranks: int, overlap: bool, out: Path) -> dict[str, float]:
    launcher = _torchrun(ranks) if ranks > 1 else [sys.executable]
    argv = [
        *launcher,
        "-m",
        "anetrain",
        "train",
        "--model",
        args.model,
        "--backend",
        "sim",
        "--steps",
        str(args.steps),
        "--accum",
        str(args.windows // ranks),
        "--eval-every",
        str(10**6),
        "--ckpt-every",
        str(10**6),
        "--sample-tokens",
        "0",
        "--no-progress",
        "--out",
        str(out),
        *(["--dist-overlap"] if overlap else []),
    ]
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["type"] == "step"][WARMUP_STEPS:]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "ms": statistics.median(s["ms"] for s in steps),
        "comm": statistics.median(s["comm_ms"] for s in steps),
        "tokens_per_s": statistics.median(s["tokens_per_s"] for s in steps),
        "bytes": summary["comm_bytes_per_step"],
    }


def bare_allreduce(n: int, repeats: int) -> None:
    """Under torchrun: time all-reduces of an ``n``-float buffer; rank 0 prints the median."""
    import numpy as np
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    buf = torch.from_numpy(np.ones(n, np.float32))
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buf)
        times.append((time.perf_counter() - start) * 1e3)
    if dist.get_rank() == 0:
        print(json.dumps({"ms": statistics.median(times[2:])}))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--windows", type=int, default=4, help="windows per step, all ranks together")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bare-allreduce", type=int, help=argparse.SUPPRESS)  # the inner run
    args = p.parse_args()
    if args.bare_allreduce:
        bare_allreduce(args.bare_allreduce, 30)
        return
    if args.steps <= WARMUP_STEPS or args.rounds < 1:
        p.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps, --rounds be at least 1")
    if args.windows < 2 or args.windows % 2:
        p.error(f"--windows must be even and at least 2 (split over 2 ranks), got {args.windows}")

    from anetrain.errors import AnetrainError
    from anetrain.model.config import load_config

    try:
        n_params = load_config(args.model).n_params
    except AnetrainError as err:
        p.error(str(err))
    variants = {"1 process": (1, False), "2 ranks": (2, False), "2 ranks, overlap": (2, True)}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (ranks, overlap) in variants.items():
                out = Path(tmp) / f"{r}-{ranks}-{overlap}"
                results[name].append(run_train(args, ranks, overlap, out))
    bare = subprocess.run(
        [*_torchrun(2), __file__, "--bare-allreduce", str(n_params)],
        env=_env(),
        capture_output=True,
        text=True,
    )
    bare_ms = None
    if bare.returncode == 0:
        bare_ms = json.loads(bare.stdout.strip().splitlines()[-1])["ms"]

    print(
        f"{args.model}: {n_params / 1e6:.2f}M parameters ({4 * n_params / 1e6:.1f} MB of fp32 "
        f"gradients); {args.windows} windows per step; {args.steps} steps x {args.rounds} rounds"
    )
    print(f"{'':18} {'ms/step':>8} {'tokens/s':>9} {'all-reduce ms':>14} {'MB sent/rank':>13}")
    base = None
    for name, runs in results.items():
        ms = statistics.median(x["ms"] for x in runs)
        base = base or ms
        tps = statistics.median(x["tokens_per_s"] for x in runs)
        comm = statistics.median(x["comm"] for x in runs)
        mb = runs[0]["bytes"] / 1e6
        print(f"{name:18} {ms:8.1f} {tps:9,.0f} {comm:14.1f} {mb:13.1f}   x{base / ms:.2f}")
    if bare_ms is not None:
        print(f"bare gloo all-reduce of the gradient buffer, 2 idle ranks: {bare_ms:.2f} ms")
    print(f"machine: {os.cpu_count()} logical CPUs shared by all ranks")


if __name__ == "__main__":
    main()
