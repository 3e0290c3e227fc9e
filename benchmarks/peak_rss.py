"""Peak resident memory of a preset's training steps on the simulator (the trainer's step).

    flock /tmp/bigmem.lock python benchmarks/peak_rss.py [--model stories110m] [--steps 1]

Builds the trainer on the built-in corpus (compacted vocabulary), runs ``--steps`` optimizer
steps and prints this process's peak RSS (``ru_maxrss``) after the first step (the issue's
one-step measure) and, with ``--steps 2`` or more, over every step: from the second step on the
Adam moments are resident through the forward and backward, so that is the steady state of a
real run. Beside them, the floor every trainer pays: parameters, gradients and the two AdamW
moments in fp32 (16 bytes per parameter). GB are 10**9 bytes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.errors import AnetrainError
from anetrain.model.config import preset
from anetrain.train.loop import TrainConfig, Trainer


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="stories110m")
    ap.add_argument("--steps", type=int, default=1, help="optimizer steps (2+: steady state)")
    ap.add_argument("--target-gb", type=float, default=2.0)
    args = ap.parse_args()
    if args.steps < 1 or args.target_gb <= 0:
        ap.error("--steps must be at least 1 and --target-gb above 0")
    try:
        model = preset(args.model)
    except AnetrainError as err:
        ap.error(str(err))
    data = TokenFile(builtin_dataset(), vocab_size=model.vocab_size)
    cfg = TrainConfig(steps=args.steps, accum=1, eval_every=10**9, ckpt_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        trainer = Trainer(model, data, cfg, Path(tmp))
        built = peak_bytes()
        record = trainer.train_step()
        one = peak_bytes()
        wall = time.perf_counter() - start
        for _ in range(args.steps - 1):
            record = trainer.train_step()
        trainer.pipeline.close()
    peak = peak_bytes()
    floor = 16 * model.n_params
    print(f"model {args.model}: {model.n_params / 1e6:.1f}M params, loss {record.loss:.3f}")
    print(f"build + 1 step      {wall:8.1f} s")
    print(f"peak RSS after build {built / 1e9:7.2f} GB")
    print(f"peak RSS            {one / 1e9:8.2f} GB  (one step; target <= {args.target_gb} GB)")
    if args.steps > 1:
        label = f"peak RSS, {args.steps} steps"
        print(f"{label:20s}{peak / 1e9:8.2f} GB  (steady state: the moments resident)")
    print(f"params+grads+AdamW  {floor / 1e9:8.2f} GB  (16 bytes per parameter)")


if __name__ == "__main__":
    main()
