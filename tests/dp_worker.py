"""One rank (or the single process) of the data-parallel equivalence runs in
tests/test_train_distributed.py; run under torchrun or plainly.

``python dp_worker.py OUT WINDOWS`` with ``WINDOWS`` the windows of the whole step (each rank
trains on ``WINDOWS / world_size``). It writes, into ``OUT`` (rank 0 only):

* ``grads1.npy``: the summed gradient of step 1 with half the windows (no clipping), and
  ``grads1-overlap.npy`` the same with the sums overlapped with the backward;
* ``losses.json`` and ``final.npy``: 20 steps with fp32 kernels;
* ``half/``: the run folder of the same 20-step run stopped after 10 steps (its checkpoint);
* ``resumed.npy`` and ``resumed.json``: with ``--resume-half DIR``, ``DIR``'s 10-step checkpoint
  continued to step 20 in this world;
* ``mismatch.txt``: the error :meth:`check_identical` gives when rank 1's weights differ;
* ``no-checkpoint-rank{R}.txt``: each rank's error for ``--resume`` of a folder without one.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.errors import AnetrainError
from anetrain.model.config import load_config
from anetrain.train.distributed import DistributedError, connect
from anetrain.train.loop import TrainConfig, Trainer

STEPS = 20


def main() -> None:
    out, windows = Path(sys.argv[1]), int(sys.argv[2])
    resume_half = Path(sys.argv[4]) if sys.argv[3:4] == ["--resume-half"] else None
    world = connect(timeout_s=60)
    model = load_config("tiny")
    data = TokenFile(builtin_dataset(), vocab_size=model.vocab_size)
    per_rank = windows // world.size
    assert per_rank * world.size == windows

    def trainer(run: Path, accum: int, resume: bool = False, **kw: object) -> Trainer:
        cfg = TrainConfig(
            steps=STEPS, accum=accum, eval_every=10**6, ckpt_every=10**6, fp16=False, **kw
        )
        return Trainer(model, data, cfg, run, resume=resume, world=world)

    if resume_half is not None:
        run = out / "resumed"
        if world.is_writer:
            shutil.copytree(resume_half, run)
        t = trainer(run, per_rank, resume=True)
        t.run()
        if world.is_writer:
            np.save(out / "resumed.npy", t.params.flat)
            (out / "resumed.json").write_text(json.dumps(t.history))
        world.close()
        return

    try:
        trainer(out / "nothing-here", per_rank, resume=True)
    except AnetrainError as err:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"no-checkpoint-rank{world.rank}.txt").write_text(str(err))

    for overlap, name in ((False, "grads1.npy"), (True, "grads1-overlap.npy")):
        world.overlap = overlap  # type: ignore[attr-defined]  # only DataParallel reads it
        t = trainer(out / "grads", max(per_rank // 2, 1), clip=1e30)  # no clipping
        t.train_step()
        if world.is_writer:
            np.save(out / name, t.grads.flat)
        t.pipeline.close()
    world.overlap = False  # type: ignore[attr-defined]

    t = trainer(out / "half", per_rank)
    while t.step < STEPS // 2:
        t.train_step()
    t.save()
    t.pipeline.close()

    t = trainer(out / "full", per_rank)
    t.run()
    if world.is_writer:
        np.save(out / "final.npy", t.params.flat)
        (out / "losses.json").write_text(json.dumps(t.history))

    if world.size > 1:
        weights = t.params.flat.copy()
        weights[123] += world.rank  # rank 1 now differs from rank 0
        try:
            world.check_identical({"parameters": weights}, {"step": t.step})
        except DistributedError as err:
            if world.is_writer:
                (out / "mismatch.txt").write_text(str(err))
    world.close()


if __name__ == "__main__":
    main()
