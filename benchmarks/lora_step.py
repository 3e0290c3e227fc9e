"""LoRA vs full fine-tuning of the same shape on the simulated ANE pipeline: step time, peak RSS.

    flock /tmp/bigmem.lock python benchmarks/lora_step.py [--model qwen3-0.6b] [--rank 16]
        [--layers N] [--steps 3] [--dropout P] [--vocab data|full]

Each mode runs in its own fresh process, one after the other (so each peak RSS is its own):
``full`` trains every weight (fp32 weights, gradients and two AdamW moments); ``lora`` holds the
base once in fp16, trains rank-R adapters on all seven projections (AdamW over the adapters
only) and stages ``W + (alpha/r) B A`` into the kernels' weight regions each step. Both run
``Trainer.train_step`` (one window of ``seq_len`` tokens of the built-in corpus) after one
untimed warm-up step, with the softmax over the same vocabulary in every mode: ``--vocab data``
(the default, the figures in docs/performance.md) the 231 ids the corpus uses, ``--vocab full``
every id, as ``anetrain train --init`` fine-tunes by default. ``--layers`` keeps every width and
cuts the depth (label your figures so). Prints per-mode median step time, peak RSS (VmHWM) and the
RSS after the steps (VmRSS), then the LoRA/full ratios. ``--dropout P`` adds a third mode, LoRA with
peft's dropout P (the kernels keep the base weights; the adapter terms run beside them with a
fresh mask per projection and window), and its ratios to LoRA without dropout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(args: argparse.Namespace) -> dict[str, object]:
    from anetrain.data.corpus import builtin_dataset
    from anetrain.data.tokens import TokenFile
    from anetrain.model.config import preset
    from anetrain.model.lora import lora_config
    from anetrain.model.params import init_params
    from anetrain.train.loop import TrainConfig, Trainer
    from anetrain.train.trainable import LoraTrainable

    model = preset(args.model)
    if args.layers:
        model = model.replace(n_layers=args.layers)
    data = TokenFile(builtin_dataset(), vocab_size=model.vocab_size)
    cfg = TrainConfig(steps=10**6, accum=1, eval_every=10**6, ckpt_every=10**6, vocab=args.vocab)
    start = time.perf_counter()
    trainable = None
    if args.child in ("lora", "dropout"):
        base = init_params(model)
        dropout = args.dropout if args.child == "dropout" else 0.0
        lora = lora_config(model, args.rank, 2.0 * args.rank, dropout=dropout)
        trainable = LoraTrainable(base, lora)
        del base  # the fp32 init; the trainable holds the fp16 base
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, data, cfg, Path(tmp), trainable=trainable)
        setup_s = time.perf_counter() - start
        trainer.train_step()  # warm-up
        ms = [trainer.train_step().ms for _ in range(args.steps)]
        trainer.pipeline.close()
        trainer._metrics.close()
    return {
        "mode": args.child,
        "params": model.n_params,
        "trainable": int(trainer.trainable.values.flat.size),
        "setup_s": setup_s,
        "step_ms": ms,
        "peak_rss_kib": _status_kib("VmHWM"),
        "end_rss_kib": _status_kib("VmRSS"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen3-0.6b")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--layers", type=int, default=0, help="cut the depth (0: the preset's)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    ap.add_argument("--dropout", type=float, default=0.0, help="also time LoRA with dropout P")
    ap.add_argument(
        "--vocab",
        choices=["data", "full"],
        default="data",
        help="the softmax over the corpus's ids (default) or every id, in every mode",
    )
    ap.add_argument(
        "--child",
        choices=["full", "lora", "dropout"],
        help="time one mode in this process and print its JSON (the parent runs one per mode)",
    )
    args = ap.parse_args()
    if not 0.0 <= args.dropout < 1.0:  # also refuses nan
        ap.error(f"--dropout {args.dropout}: must be a probability in [0, 1)")
    if args.rank < 1 or args.steps < 1 or args.layers < 0:
        ap.error("--rank and --steps must be at least 1, --layers at least 0")
    if args.child:
        print(json.dumps(child(args)))
        return
    results = {}
    for mode in ("full", "lora", "dropout") if args.dropout else ("full", "lora"):
        argv = [sys.executable, __file__, "--child", mode, "--model", args.model]
        argv += ["--rank", str(args.rank), "--layers", str(args.layers)]
        argv += ["--dropout", str(args.dropout), "--steps", str(args.steps)]
        argv += ["--vocab", args.vocab]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:  # the child's own last line says what went wrong
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            sys.exit(f"lora_step.py: the {mode} run failed: {last}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    depth = f", {args.layers} layers (widths of the preset)" if args.layers else ""
    vocab = "the full vocabulary" if args.vocab == "full" else "the corpus's ids"
    print(
        f"{args.model}{depth}, sim backend, LoRA rank {args.rank} on q,k,v,o,gate,up,down, "
        f"softmax over {vocab}"
    )
    for mode, r in results.items():
        print(
            f"{mode:7s} {r['trainable']:>13,} trainable of {r['params']:,}  "
            f"step {statistics.median(r['step_ms']):8.0f} ms (median of {len(r['step_ms'])}; "
            f"{', '.join(f'{m:.0f}' for m in r['step_ms'])})  "
            f"peak RSS {r['peak_rss_kib'] / 2**20:5.2f} GiB  end RSS "
            f"{r['end_rss_kib'] / 2**20:5.2f} GiB  setup {r['setup_s']:.0f} s"
        )
    full, lora = results["full"], results["lora"]
    step = statistics.median(lora["step_ms"]) / statistics.median(full["step_ms"])
    rss = lora["peak_rss_kib"] / full["peak_rss_kib"]
    print(f"lora/full: step time x{step:.2f}, peak RSS x{rss:.2f}")
    if args.dropout:
        drop = results["dropout"]
        step = statistics.median(drop["step_ms"]) / statistics.median(lora["step_ms"])
        rss = drop["peak_rss_kib"] / lora["peak_rss_kib"]
        print(f"dropout {args.dropout:g}/lora: step time x{step:.2f}, peak RSS x{rss:.2f}")


if __name__ == "__main__":
    main()
