"""One rank (or the single process) of the LoRA data-parallel runs in
tests/test_train_distributed.py; run under torchrun or plainly.

``python dp_lora_worker.py BASE TOKENS OUT WINDOWS DROPOUT``: LoRA rank 4 on all seven
projections of the Hugging Face folder ``BASE``, ``STEPS`` steps of ``WINDOWS`` windows in all
(``WINDOWS / world_size`` per rank), fp32 kernels. Rank 0 writes ``OUT/adapters.npy`` (the
final adapters), ``OUT/moments.npy`` (AdamW's first moment) and ``OUT/losses.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from anetrain.data.tokens import TokenFile
from anetrain.model.hf import import_hf
from anetrain.model.lora import lora_config
from anetrain.train.distributed import connect
from anetrain.train.loop import TrainConfig, Trainer
from anetrain.train.trainable import LoraTrainable

STEPS = 6


def main() -> None:
    base, tokens, out = (Path(a) for a in sys.argv[1:4])
    windows, dropout = int(sys.argv[4]), float(sys.argv[5])
    world = connect(timeout_s=60)
    h = import_hf(base, seq_len=32)
    data = TokenFile(tokens, vocab_size=h.config.vocab_size)
    trainable = LoraTrainable(h.params, lora_config(h.config, rank=4, dropout=dropout), seed=3)
    cfg = TrainConfig(
        steps=STEPS, accum=windows // world.size, lr=1e-2, warmup=0, eval_every=10**6,
        ckpt_every=10**6, fp16=False,
    )  # fmt: skip
    trainer = Trainer(h.config, data, cfg, out, world=world, trainable=trainable)
    trainer.run()  # checks the ranks agree before its final checkpoint
    if world.is_writer:
        np.save(out / "adapters.npy", trainable.values.flat)
        np.save(out / "moments.npy", trainer.adam.m)
        (out / "losses.json").write_text(json.dumps(trainer.history))
    world.close()


if __name__ == "__main__":
    main()
