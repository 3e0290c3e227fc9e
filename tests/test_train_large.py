"""The big presets build their kernels and run one optimizer step on the simulator.

Slow (minutes, up to ~12 GB for qwen3-0.6b), so excluded from the default run:
``python -m pytest -m slow tests/test_train_large.py``.
"""

from __future__ import annotations

import math

import pytest

from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.model.config import preset
from anetrain.train.loop import TrainConfig, Trainer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stories110m", "qwen3-0.6b"])
def test_one_step_on_sim(name: str, tmp_path) -> None:
    model = preset(name)
    if name == "qwen3-0.6b":  # the real architecture: QK-norm, RoPE base 1e6, 151,936 ids
        assert model.qk_norm and model.vocab_size == 151936 and model.n_params == 596_049_920
    data = TokenFile(builtin_dataset(), vocab_size=model.vocab_size)
    cfg = TrainConfig(steps=1, accum=1, eval_every=100, ckpt_every=100)
    trainer = Trainer(model, data, cfg, tmp_path)
    assert len(trainer.pipeline.kernels) == 10
    record = trainer.train_step()
    assert math.isfinite(record.loss) and not record.skipped
    assert record.loss == pytest.approx(math.log(231), abs=0.5)
    trainer.pipeline.close()


@pytest.mark.slow
@pytest.mark.parametrize("extras", [False, True], ids=["static", "extras"])
def test_stories110m_static_one_step_on_sim(extras: bool, tmp_path) -> None:
    """The original's headline pipelines at full size: 72 (99) kernels compiled, one step."""
    model = preset("stories110m")
    data = TokenFile(builtin_dataset(), vocab_size=model.vocab_size)
    cfg = TrainConfig(
        steps=1, accum=1, eval_every=100, ckpt_every=100, pipeline="static", ane_extras=extras
    )
    trainer = Trainer(model, data, cfg, tmp_path)
    assert len(trainer.pipeline.kernels) == (99 if extras else 72)
    record = trainer.train_step()
    assert math.isfinite(record.loss) and not record.skipped
    assert record.loss == pytest.approx(math.log(231), abs=0.5)
    trainer.pipeline.close()
