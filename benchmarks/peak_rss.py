"""Peak resident memory of one training step of a preset on the simulator (the trainer's step).

    flock /tmp/bigmem.lock python benchmarks/peak_rss.py [--model stories110m] [--target-gb 2.0]

Builds the trainer on the built-in corpus (compacted vocabulary), runs one optimizer step and
prints this process's peak RSS (``ru_maxrss``) beside the floor every trainer pays: parameters,
gradients and the two AdamW moments in fp32 (16 bytes per parameter). GB are 10**9 bytes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.model.config import preset
from anetrain.train.loop import TrainConfig, Trainer


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="stories110m")
    ap.add_argument("--target-gb", type=float, default=2.0)
    args = ap.parse_args()
    model = preset(args.model)
    data = TokenFile(builtin_dataset(), vocab_size=model.vocab_size)
    cfg = TrainConfig(steps=1, accum=1, eval_every=100, ckpt_every=100)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        trainer = Trainer(model, data, cfg, Path(tmp))
        built = peak_bytes()
        record = trainer.train_step()
        trainer.pipeline.close()
        wall = time.perf_counter() - start
    peak = peak_bytes()
    floor = 16 * model.n_params
    print(f"model {args.model}: {model.n_params / 1e6:.1f}M params, loss {record.loss:.3f}")
    print(f"build + 1 step      {wall:8.1f} s")
    print(f"peak RSS after build {built / 1e9:7.2f} GB")
    print(f"peak RSS            {peak / 1e9:8.2f} GB  (target <= {args.target_gb} GB)")
    print(f"params+grads+AdamW  {floor / 1e9:8.2f} GB  (16 bytes per parameter)")


if __name__ == "__main__":
    main()
