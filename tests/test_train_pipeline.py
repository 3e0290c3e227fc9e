"""The training step through the simulated ANE kernels, graded by an independent oracle.

Tolerances: with fp32 kernels (``dtype=FP32``: the same MIL programs, no fp16 rounding) every
parameter gradient must have cosine >= 0.999 and relative L2 error <= 1e-4 against PyTorch
autograd. With fp16 kernels (what the ANE runs) the bound is cosine >= 0.999 and relative L2
error <= 1e-2; measured here it is about 1.5e-3.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from anetrain.data.corpus import builtin_dataset
from anetrain.data.tokens import TokenFile
from anetrain.errors import AnetrainError
from anetrain.mil.types import FP16, FP32
from anetrain.model.config import ModelConfig
from anetrain.model.params import init_params
from anetrain.train.loop import TrainConfig, Trainer
from anetrain.train.pipeline import CompactVocab, DynamicPipeline, WeightsNotStaged

CFG = ModelConfig(
    dim=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=64,
    vocab_size=64,
    seq_len=16,
    residual_scaling=True,
)


def _torch_grads(cfg: ModelConfig, params, tokens, targets):
    torch = pytest.importorskip("torch")
    from torch_model import torch_loss

    w = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for k, v in params.tensors.items()
    }
    _, loss = torch_loss(cfg, w, torch.tensor(tokens[None]), torch.tensor(targets[None]))
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in w.items()}


@pytest.mark.parametrize(("dtype", "max_rel"), [(FP32, 1e-4), (FP16, 1e-2)], ids=["fp32", "fp16"])
def test_every_gradient_matches_torch_autograd(dtype, max_rel) -> None:
    params = init_params(CFG, seed=3)
    rng = np.random.default_rng(0)
    seq = rng.integers(0, CFG.vocab_size, CFG.seq_len + 1)
    tokens, targets = seq[:-1], seq[1:]
    ref_loss, ref = _torch_grads(CFG, params, tokens, targets)

    pipe = DynamicPipeline(CFG, backend="sim", dtype=dtype)
    pipe.stage_weights(params)
    grads = params.zeros_like()
    loss = pipe.forward_backward(
        params, grads, tokens, targets, loss_scale=256.0, grad_scale=1 / 256
    )
    pipe.close()
    assert loss == pytest.approx(ref_loss, rel=1e-6 if dtype is FP32 else 1e-3)
    for name, expected in ref.items():
        got = grads[name].astype(np.float64).ravel()
        exp = expected.ravel()
        cos = got @ exp / (np.linalg.norm(got) * np.linalg.norm(exp))
        rel = np.linalg.norm(got - exp) / np.linalg.norm(exp)
        assert cos >= 0.999, f"{name}: cosine {cos}"
        assert rel <= max_rel, f"{name}: relative error {rel}"


def test_gradients_accumulate_across_windows() -> None:
    params = init_params(CFG, seed=1)
    rng = np.random.default_rng(1)
    windows = [rng.integers(0, CFG.vocab_size, CFG.seq_len + 1) for _ in range(2)]
    pipe = DynamicPipeline(CFG, backend="sim", dtype=FP32)
    pipe.stage_weights(params)
    both = params.zeros_like()
    singles = []
    for w in windows:
        pipe.forward_backward(params, both, w[:-1], w[1:], grad_scale=0.5)
        g = params.zeros_like()
        pipe.forward_backward(params, g, w[:-1], w[1:], grad_scale=0.5)
        singles.append(g)
    pipe.wait()
    np.testing.assert_allclose(both.flat, singles[0].flat + singles[1].flat, rtol=1e-5, atol=1e-9)
    pipe.close()


def test_compact_vocabulary_rejects_unseen_targets() -> None:
    vocab = CompactVocab(np.array([5, 1, 3, 3]), 8)
    assert vocab.ids.tolist() == [1, 3, 5]
    assert vocab.compact(np.array([5, 1])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="outside the compacted vocabulary"):
        vocab.compact(np.array([2]))


@pytest.fixture(scope="module")
def builtin_tokens() -> TokenFile:
    return TokenFile(builtin_dataset(), vocab_size=512)


QUICK = ModelConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=172, vocab_size=512, seq_len=64)


def test_loss_falls_on_the_builtin_corpus(tmp_path, builtin_tokens) -> None:
    """The CI training check: 300 steps of 64 tokens must cut the loss by at least 1 nat
    (measured: 5.46 -> 4.0, validation 3.9)."""
    cfg = TrainConfig(steps=300, accum=1, lr=1e-2, warmup=5, eval_every=150, ckpt_every=150)
    summary = Trainer(QUICK, builtin_tokens, cfg, tmp_path).run()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r["type"] == "step"]
    assert len(steps) == 300 and [r["step"] for r in lines if r["type"] == "val"] == [150, 300]
    for key in (
        "loss",
        "lr",
        "grad_norm",
        "loss_scale",
        "ms",
        "kernels_ms",
        "io_ms",
        "classifier_ms",
        "elementwise_ms",
        "rmsnorm_ms",
        "blas_wait_ms",
    ):
        assert key in steps[0], key
    first = summary["first_loss"]
    assert first == pytest.approx(math.log(231), abs=0.3)  # ~uniform over the used ids
    late = float(np.mean([r["loss"] for r in steps[-20:]]))
    assert late < first - 1.0, (first, late)
    assert summary["best_val_loss"] < first - 1.0
    assert (tmp_path / "ckpt_last.safetensors").exists()
    assert (tmp_path / "ckpt_best.safetensors").exists()


def test_dynamic_loss_scale_backs_off_and_skips(tmp_path, builtin_tokens) -> None:
    """A scale of 2^40 overflows fp16 in the backward kernels: the step is skipped, the
    weights stay put, and the scale halves until the gradients are finite again."""
    cfg = TrainConfig(
        steps=3,
        accum=1,
        loss_scale=2.0**40,
        dynamic_loss_scale=True,
        eval_every=100,
        ckpt_every=100,
    )
    trainer = Trainer(QUICK, builtin_tokens, cfg, tmp_path)
    before = trainer.params.flat.copy()
    record = trainer.train_step()
    assert record.skipped and math.isinf(record.grad_norm)
    np.testing.assert_array_equal(trainer.params.flat, before)
    assert trainer.scaler.scale == 2.0**39 and trainer.scaler.skipped == 1
    trainer.pipeline.close()


def test_m1_profile_gets_the_same_kernels_in_the_ios16_dialect() -> None:
    """M1/M2 accept only program(1.0)/ios16: the pipeline builds its kernels in that dialect,
    and they compute exactly what the ios18 ones do."""
    params = init_params(CFG, seed=5)
    seq = np.random.default_rng(5).integers(0, CFG.vocab_size, CFG.seq_len + 1)
    losses = {}
    for chip in ("m1", "m4"):
        pipe = DynamicPipeline(CFG, backend="sim", chip=chip)
        version = "1.0" if chip == "m1" else "1.3"
        assert {s.model.program.version for s in pipe.specs.values()} == {version}
        pipe.stage_weights(params)
        losses[chip] = pipe.forward_backward(params, params.zeros_like(), seq[:-1], seq[1:])
        pipe.close()
    assert losses["m1"] == losses["m4"]


def test_a_window_before_any_staged_weights_is_refused() -> None:
    """Unstaged surfaces hold zeros, which would train silently on garbage: a typed error."""
    params = init_params(CFG, seed=0)
    pipe = DynamicPipeline(CFG, backend="sim", overlap_blas=False)
    tokens = np.zeros(CFG.seq_len, np.int64)
    try:
        with pytest.raises(WeightsNotStaged, match="stage_weights"):
            pipe.forward_backward(params, params.zeros_like(), tokens, tokens)
        with pytest.raises(WeightsNotStaged):
            pipe.forward(params, tokens)
        assert isinstance(WeightsNotStaged("x"), AnetrainError)
        pipe.stage_weights(params)
        assert math.isfinite(pipe.forward_backward(params, params.zeros_like(), tokens, tokens))
    finally:
        pipe.close()


def test_every_kernel_evaluation_goes_through_the_call_helper(monkeypatch) -> None:
    """One window: each of the ten kernels is evaluated once per layer, each through
    BoundKernel.__call__ (so its io and kernel time land in the step's phases)."""
    from anetrain.train.calls import BoundKernel

    calls: list[str] = []
    original = BoundKernel.__call__

    def counting(self, *args, **kwargs):
        calls.append(self.spec.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BoundKernel, "__call__", counting)
    params = init_params(CFG, seed=0)
    pipe = DynamicPipeline(CFG, backend="sim", overlap_blas=False)
    evals_before = sum(k.stats.evals for k in pipe.kernels.values())
    try:
        pipe.stage_weights(params)
        tokens = np.arange(CFG.seq_len) % CFG.vocab_size
        pipe.forward_backward(params, params.zeros_like(), tokens, tokens)
        evals = sum(k.stats.evals for k in pipe.kernels.values()) - evals_before
        assert evals == len(calls) == 10 * CFG.n_layers
        assert sorted(set(calls)) == sorted(pipe.kernels)
        phases = pipe.timer.take()
        assert phases["kernels"] > 0 and phases["io"] > 0
    finally:
        pipe.close()


def test_per_call_weights_match_prestaged_surfaces_bit_for_bit() -> None:
    """prestage=False (no surface per layer; each call writes its layer's weights) computes
    exactly what the prestaged surfaces do, across an update and a restage."""
    seq = np.random.default_rng(2).integers(0, CFG.vocab_size, CFG.seq_len + 1)
    results = []
    for prestage in (True, False):
        params = init_params(CFG, seed=4)
        pipe = DynamicPipeline(CFG, backend="sim", prestage=prestage)
        assert pipe.prestage is prestage
        surfaces = {id(s) for bound in pipe.k.values() for s in bound.inputs}
        assert len(surfaces) == (10 if not prestage else 10 + 8 * (CFG.n_layers - 1))
        out = []
        for _ in range(2):
            grads = params.zeros_like()
            pipe.stage_weights(params)
            out.append(pipe.forward_backward(params, grads, seq[:-1], seq[1:], 256.0, 1 / 256))
            pipe.wait()
            out.append(grads.flat.copy())
            params.flat -= 1e-2 * np.sign(grads.flat)  # an update, then restage
        pipe.close()
        results.append(out)
    for a, b in zip(*results, strict=True):
        if isinstance(a, float):
            assert a == b
        else:
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_memory_released_between_windows_changes_no_bit() -> None:
    """release_memory (the kernels' scratch, output surfaces and per-call input surfaces)
    between windows: the same loss and gradients, to the bit, as without; with garbage there
    instead of the zeros Linux gives back too (the contents are undefined)."""
    seq = np.random.default_rng(3).integers(0, CFG.vocab_size, CFG.seq_len + 1)
    params = init_params(CFG, seed=6)
    results = []
    for mode in ("keep", "release", "garbage"):
        pipe = DynamicPipeline(CFG, backend="sim", prestage=False)
        pipe.stage_weights(params)
        out = []
        for _ in range(2):
            grads = params.zeros_like()
            out.append(pipe.forward_backward(params, grads, seq[:-1], seq[1:], 256.0, 1 / 256))
            pipe.wait()
            out.append(grads.flat.copy())
            if mode == "release":
                pipe.release_memory()
            elif mode == "garbage":
                for bound in pipe.k.values():
                    outputs = [s.values for r in bound.requests for s in r.outputs]
                    for buf in (*bound.kernel.plan.transient, bound.inputs[0].values, *outputs):
                        buf.reshape(-1).view(np.uint8)[...] = 0xFF
        pipe.close()
        results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            if isinstance(a, float):
                assert a == b
            else:
                assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_the_trainer_gives_kernel_memory_back_before_a_large_models_update(
    tmp_path, builtin_tokens, monkeypatch
) -> None:
    """Above PRESTAGE_MAX_BYTES of parameters (here lowered to 0) each step releases the
    kernels' scratch and per-call inputs once, after the backward and before AdamW first
    touches the moments; small models keep theirs (no refaults on the step's fast path)."""
    from anetrain.train import loop
    from anetrain.train.optim import AdamW

    events: list[tuple[str, int]] = []
    release, adam_step = DynamicPipeline.release_memory, AdamW.step

    def spy_release(self: DynamicPipeline) -> int:
        n = release(self)
        events.append(("release", n))
        return n

    def spy_step(self: AdamW, *args, **kwargs) -> None:
        events.append(("adam", 0))
        adam_step(self, *args, **kwargs)

    monkeypatch.setattr(DynamicPipeline, "release_memory", spy_release)
    monkeypatch.setattr(AdamW, "step", spy_step)
    cfg = TrainConfig(steps=2, accum=1, eval_every=100, ckpt_every=100)
    for limit, expect in ((0, ["release", "adam"] * 2), (1 << 40, ["adam"] * 2)):
        monkeypatch.setattr(loop, "PRESTAGE_MAX_BYTES", limit)
        events.clear()
        trainer = Trainer(QUICK, builtin_tokens, cfg, tmp_path / str(limit))
        trainer.train_step()
        trainer.train_step()
        trainer.pipeline.close()
        assert [e for e, _ in events] == expect
        assert all(n > 0 for e, n in events if e == "release")


def test_large_models_do_not_keep_a_weight_surface_per_layer() -> None:
    from anetrain.kernels.dynamic import Dims, build_kernels
    from anetrain.model.config import preset
    from anetrain.train.pipeline import PRESTAGE_MAX_BYTES

    def layer_surface_bytes(name: str) -> int:
        cfg = preset(name)
        specs = build_kernels(Dims.from_config(cfg)).values()
        return cfg.n_layers * sum(4 * int(np.prod(s.in_shape)) for s in specs if s.weights)

    assert (
        layer_surface_bytes("stories15m") <= PRESTAGE_MAX_BYTES < layer_surface_bytes("stories110m")
    )


def test_finished_deferred_jobs_let_go_of_what_they_read() -> None:
    """A finished weight-gradient job is dropped at the next one queued, so its closure (the
    activations and output gradients it read) does not live until wait(); a failed one stays,
    for wait() to raise."""
    import gc
    import weakref

    pipe = DynamicPipeline(CFG, backend="sim")
    try:

        class Held:
            pass

        held = Held()
        ref = weakref.ref(held)
        pipe._defer(lambda h=held: None, {("w1", 0)})
        del held
        pipe._pending[-1].future.result()
        pipe._defer(lambda: None, {("w1", 1)})
        gc.collect()
        assert ref() is None

        def fail() -> None:
            raise RuntimeError("gemm failed")

        pipe._defer(fail, {("w2", 0)})
        pipe._pending[-1].future.exception()  # finished, with the error
        pipe._defer(lambda: None, {("w2", 1)})
        with pytest.raises(RuntimeError, match="gemm failed"):
            pipe.wait()
    finally:
        pipe._pending.clear()
        pipe.close()
