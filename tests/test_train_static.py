"""The static pipeline (baked weights, per-layer kernels) and its ANE extras, graded by PyTorch
autograd and against the dynamic pipeline on the same weights and tokens.

Tolerances as the dynamic pipeline's test: fp32 kernels (the same MIL programs without fp16
rounding) within relative L2 1e-4 of autograd, fp16 kernels within 1e-2 (measured: about
1.7e-3 static, 1.9e-3 with the extras).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anetrain.kernels.dynamic import Dims, KernelSpecError, Region, span
from anetrain.kernels.static import build_static_kernels
from anetrain.mil.types import FP16, FP32
from anetrain.model.config import ModelConfig, preset
from anetrain.model.params import Params, init_params
from anetrain.train.pipeline import DynamicPipeline
from anetrain.train.static import StaticPipeline
from test_train_pipeline import CFG  # the dynamic pipeline's test model (GQA, alpha)

VARIANTS = [False, True]
IDS = ["static", "extras"]


def _window(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    seq = np.random.default_rng(seed).integers(0, CFG.vocab_size, CFG.seq_len + 1)
    return seq[:-1], seq[1:]


def _grads(pipe, params: Params, tokens, targets) -> tuple[float, Params]:
    pipe.stage_weights(params)
    grads = params.zeros_like()
    loss = pipe.forward_backward(params, grads, tokens, targets, 256.0, 1 / 256)
    pipe.wait()
    pipe.close()
    return loss, grads


def _compare(got: Params, expected: dict[str, np.ndarray], max_rel: float) -> None:
    for name, exp in expected.items():
        g, e = got[name].astype(np.float64).ravel(), np.asarray(exp).ravel()
        cos = g @ e / (np.linalg.norm(g) * np.linalg.norm(e))
        rel = np.linalg.norm(g - e) / np.linalg.norm(e)
        assert cos >= 0.999, f"{name}: cosine {cos}"
        assert rel <= max_rel, f"{name}: relative error {rel}"


@pytest.mark.parametrize("extras", VARIANTS, ids=IDS)
@pytest.mark.parametrize(("dtype", "max_rel"), [(FP32, 1e-4), (FP16, 1e-2)], ids=["fp32", "fp16"])
def test_every_gradient_matches_torch_autograd(extras, dtype, max_rel) -> None:
    torch = pytest.importorskip("torch")
    from torch_model import torch_loss

    params = init_params(CFG, seed=3)
    tokens, targets = _window()
    w = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for k, v in params.tensors.items()
    }
    _, ref_loss = torch_loss(CFG, w, torch.tensor(tokens[None]), torch.tensor(targets[None]))
    ref_loss.backward()
    pipe = StaticPipeline(CFG, backend="sim", dtype=dtype, extras=extras)
    loss, grads = _grads(pipe, params, tokens, targets)
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-6 if dtype is FP32 else 1e-3)
    _compare(grads, {k: v.grad.numpy() for k, v in w.items()}, max_rel)


@pytest.mark.parametrize("arch", ["llama", "qwen3-untied"])
@pytest.mark.parametrize("extras", VARIANTS, ids=IDS)
def test_static_and_dynamic_compute_the_same_model(extras, arch) -> None:
    """The same weights and tokens through both pipelines' fp16 kernels: losses within fp16
    rounding, every gradient within 1e-2 relative L2 (measured about 2e-3), on a compacted
    vocabulary (the ids of the window only) as training uses. Also with QK-norm and a separate
    classifier (the dynamic pipeline is checked against transformers for those)."""
    cfg = CFG if arch == "llama" else CFG.replace(qk_norm=True, tied_embeddings=False)
    params = init_params(cfg, seed=7)
    rng = np.random.default_rng(8)
    for name in ("q_norm", "k_norm"):  # norm weights away from 1, so their gradients matter
        if name in params.tensors:
            params[name][...] = rng.uniform(0.5, 1.5, params[name].shape)
    tokens, targets = _window(7)
    used = np.unique(np.concatenate([tokens, targets]))
    dyn_loss, dyn = _grads(DynamicPipeline(cfg, used_ids=used), params, tokens, targets)
    st = StaticPipeline(cfg, used_ids=used, extras=extras)
    st_loss, st = _grads(st, params, tokens, targets)
    assert st_loss == pytest.approx(dyn_loss, rel=2e-3)
    _compare(st, dyn.tensors, 1e-2)


@pytest.mark.parametrize(
    ("extras", "count", "per_batch"), [(False, 72, 60), (True, 99, 86)], ids=IDS
)
def test_stories110m_kernel_counts_are_the_originals(extras, count, per_batch) -> None:
    """72 = 60 weight-bearing (recompiled per batch) + 12 weight-free sdpa_bwd2; 99 = 86 per
    batch (+ 24 RMSNorm backward, final RMSNorm, classifier) + 12 sdpa_bwd2 + the softmax.
    The weight-free kernels are compiled; the 110M weights are not baked (no staging)."""
    pipe = StaticPipeline(preset("stories110m"), extras=extras, overlap_blas=False)
    try:
        assert pipe.compiles_per_stage == per_batch
        assert len(pipe.kernels) + pipe.compiles_per_stage == count
    finally:
        pipe.close()


def test_a_tiny_pipeline_compiles_the_counted_kernels() -> None:
    """The same count on a compiled pipeline: (5 + 1) per layer, extras (7 + 1) per layer + 3;
    a stage recompiles exactly the weight-bearing ones."""
    for extras, per_layer, model in [(False, 6, 0), (True, 8, 3)]:
        pipe = StaticPipeline(CFG, extras=extras, overlap_blas=False)
        pipe.stage_weights(init_params(CFG, seed=0))
        assert len(pipe.kernels) == per_layer * CFG.n_layers + model
        before = pipe.backend.compile_count
        pipe.stage_weights(init_params(CFG, seed=1))
        assert pipe.backend.compile_count - before == pipe.compiles_per_stage
        assert pipe.compiles_per_stage == (per_layer - 1) * CFG.n_layers + (model and model - 1)
        pipe.close()


@pytest.mark.parametrize("extras", VARIANTS, ids=IDS)
def test_every_baked_constant_maps_a_parameter_and_every_span_is_contiguous(extras) -> None:
    """The kernel contract: each BLOBFILE of a program is either a declared baked parameter
    (with the constant's shape) or a constant file the spec carries (mask, RoPE); every
    parameter tensor is baked somewhere; declared spans cover adjacent blocks."""
    dims = Dims.from_config(CFG)
    specs = build_static_kernels(dims, extras=extras, vocab_rows=np.arange(10))
    params = init_params(CFG, seed=0)
    baked_params = set()
    for spec in specs.values():
        consts = {
            op.attributes["val"].blob.path: op.outputs[0].type.shape
            for op in spec.model.program.main.operations
            if op.op_type == "const" and op.attributes["val"].blob is not None
        }
        for path, shape in consts.items():
            if path in spec.baked:
                w = spec.baked[path]
                assert tuple(shape) == w.shape, (spec.name, path)
                value = params[w.param][0] if w.layer else params[w.param]
                assert w.layout(value).size == int(np.prod(shape))
                baked_params.add(w.param)
            else:
                assert path in spec.model.weights, f"{spec.name}: {path} is neither"
        assert set(spec.baked) <= set(consts), spec.name
        for name, region in spec.spans.items():
            _assert_tiled(spec, name, region)
    on_cpu = set() if extras else {"embed", "rms_final"}  # the static head runs on the CPU
    assert baked_params == set(params.tensors) - on_cpu
    with pytest.raises(KernelSpecError, match="not contiguous"):
        span("k", "bad", [("a", Region(0, 4, 0, 8)), ("b", Region(5, 4, 0, 8))])


def test_taps_are_copied_surface_to_surface() -> None:
    """The backward kernels get the forward taps by surface copies: one window reads no
    q/k/v/probs to the CPU (the copied regions equal the forward outputs bit for bit)."""
    params = init_params(CFG, seed=2)
    tokens, _ = _window(2)
    pipe = StaticPipeline(CFG, overlap_blas=False)
    pipe.stage_weights(params)
    _, acts = pipe.forward(params, tokens)
    a = acts[0]
    bwd1 = pipe.k["sdpa_bwd1"][0]
    bwd1(0, qkv=a.attn.tap("qkv"), dattn=np.zeros((CFG.dim, CFG.seq_len), np.float32))
    r = bwd1.spec.input_region("qkv")
    copied = bwd1.inputs[0].read(r.ch, r.channels)
    np.testing.assert_array_equal(copied, a.attn["qkv"])
    pipe.close()


def _assert_tiled(spec, name: str, region: Region) -> None:
    """The span's channels are exactly a run of adjacent declared blocks of its width."""
    for blocks in (spec.inputs, spec.outputs):
        starts = {
            r.ch: r for r in blocks.values() if (r.col, r.width) == (region.col, region.width)
        }
        ch = region.ch
        while ch in starts and ch < region.ch + region.channels:
            ch += starts[ch].channels
        if ch == region.ch + region.channels:
            return
    raise AssertionError(f"{spec.name}: span {name} is not a run of adjacent blocks")


def _train(tmp_path, name: str, *extra: str) -> tuple[list[dict], dict, Path]:
    """``anetrain train`` in a child process (a budget restart replaces the process)."""
    import anetrain

    toml = tmp_path / "small.toml"
    toml.write_text(
        'base = "tiny"\ndim = 64\nn_layers = 2\nn_heads = 2\nhidden_dim = 128\nseq_len = 32\n'
    )
    out = tmp_path / name
    env = {**os.environ, "PYTHONPATH": str(Path(anetrain.__file__).parents[1])}
    cmd = [sys.executable, "-m", "anetrain.cli", "train", "--config", str(toml), "--steps", "6"]
    cmd += ["--accum", "2", "--eval-every", "3", "--sample-tokens", "0", "--no-progress"]
    cmd += ["--backend", "sim", "--out", str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (out / "stdout.txt").write_text(proc.stdout)
    return records, json.loads((out / "summary.json").read_text()), out


def test_a_run_that_restarts_ends_bit_identical_to_one_that_does_not(tmp_path) -> None:
    """Budget 25 on a 2-layer model: 12 compiles at start, 10 per recompile, so each process
    trains 2 steps and re-executes itself (os.execv) with --resume: 6 steps, 2 restarts. The
    losses, validation losses and final weights equal those of a run with room to spare, and
    the report's totals (steps, batches, restarts, compile and train time) cover all three
    processes."""
    from anetrain.train.checkpoint import load_checkpoint

    budget = ["--pipeline", "static", "--compile-budget"]
    once, s_once, out_once = _train(tmp_path, "once", *budget, "1000")
    split, s_split, out_split = _train(tmp_path, "split", *budget, "25")
    assert s_once["restarts"] == 0 and s_split["restarts"] == 2
    assert s_once["steps"] == s_split["steps"] == 6
    assert s_once["batches"] == s_split["batches"] == 6  # one compile per step's weights
    assert s_split["compile_s"] > 0 and s_split["train_s"] > 0
    assert s_split["wall_s"] >= s_split["compile_s"] + s_split["train_s"]

    def losses(records, kind, key):
        return [(r["step"], r[key]) for r in records if r["type"] == kind]

    assert losses(once, "step", "loss") == losses(split, "step", "loss")
    assert losses(once, "val", "val_loss") == losses(split, "val", "val_loss")
    compiled = {r["step"]: r["compile_ms"] > 0 for r in split if r["type"] == "batch"}
    # after steps 2 and 4 the next process compiles (its own record); after the last, nothing
    assert compiled == {0: True, 1: True, 2: True, 3: True, 4: True, 5: True, 6: False}
    assert [r["step"] for r in split if r["type"] == "restart"] == [2, 4]
    printed = (out_split / "stdout.txt").read_text()
    assert "[exec() restart step 2, 22 compiles" in printed
    assert "[RESUMED step 4, 2 restarts so far]" in printed
    assert {r["compiles"] for r in split if r["type"] == "step"} == {22}
    a = load_checkpoint(out_once / "ckpt_last.safetensors")
    b = load_checkpoint(out_split / "ckpt_last.safetensors")
    np.testing.assert_array_equal(a.params.flat, b.params.flat)
    np.testing.assert_array_equal(a.adam_m.flat, b.adam_m.flat)
    steps = [r for r in split if r["type"] == "step"]
    for key in ("t_ane", "t_io", "t_cls", "t_elem", "t_rms", "t_cblas_wait", "compiles"):
        assert key in steps[0], key


QUICK = ModelConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=172, vocab_size=512, seq_len=64)


@pytest.mark.parametrize("extras", VARIANTS, ids=IDS)
def test_loss_falls_on_the_builtin_corpus_like_the_dynamic_pipeline(tmp_path, extras) -> None:
    """100 steps of one 64-token window (a recompile after each): the static pipelines follow
    the dynamic one's loss on the same seed (the same data order and init), within 0.1 nat
    over the last 20 steps (measured: 4.697 static, 4.655 extras, 4.692 dynamic; first 5.45)."""
    from anetrain.data.corpus import builtin_dataset
    from anetrain.data.tokens import TokenFile
    from anetrain.train.loop import TrainConfig, Trainer

    data = TokenFile(builtin_dataset(), vocab_size=512)
    late = {}
    for name, pipeline, ane in [("dyn", "dynamic", False), ("st", "static", extras)]:
        cfg = TrainConfig(
            steps=100, accum=1, lr=1e-2, warmup=5, eval_every=100, ckpt_every=100,
            pipeline=pipeline, ane_extras=ane, compile_budget=10**6,
        )  # fmt: skip
        trainer = Trainer(QUICK, data, cfg, tmp_path / name)
        summary = trainer.run()
        late[name] = float(np.mean(trainer.history[-20:]))
        assert late[name] < summary["first_loss"] - 0.6
    assert late["st"] == pytest.approx(late["dyn"], abs=0.1)


def test_the_classifier_backward_cannot_be_a_conv_over_the_vocabulary() -> None:
    """Why the classifier backward stays on the CPU: a conv with the 32000-token vocabulary as
    input channels exceeds the chip's input-channel limit and is refused at compile."""
    from anetrain.kernels.static import _StaticBuilder
    from anetrain.runtime import get_backend
    from anetrain.runtime.errors import UnsupportedOpError

    dims = Dims.from_config(preset("stories110m"))
    k = _StaticBuilder("classifier_bwd", dims, 32000)
    dx = k.conv(
        k.region("dlogits", 0, 32000, 0, dims.seq), "embed_t", "embed", dims.dim, True, "dx"
    )
    spec = k.finish([("dx", dx)])
    with pytest.raises(UnsupportedOpError, match="32000 input channels exceed"):
        get_backend("sim", "m4max").compile(spec.model.program, {})


def test_bad_pipeline_flags_are_refused_with_one_line(capsys) -> None:
    from anetrain.cli import main

    assert main(["train", "--ane-extras", "--steps", "1", "--backend", "sim"]) == 1
    assert "--ane-extras needs --pipeline static" in capsys.readouterr().err
    args = ["train", "--pipeline", "static", "--compile-budget", "5", "--steps", "1"]
    assert main([*args, "--backend", "sim", "--out", "/nonexistent/x"]) == 1
    err = capsys.readouterr().err
    assert "compile budget 5 is below" in err and "Traceback" not in err


def test_compile_budget_is_for_the_simulator_only() -> None:
    from anetrain.train.factory import PipelineChoiceError, make_backend

    with pytest.raises(PipelineChoiceError, match="sim backend only"):
        make_backend("ane", None, 5)
    with pytest.raises(PipelineChoiceError, match="at least 1"):
        make_backend("sim", None, 0)
    assert make_backend("sim", None, 7).compile_budget == 7
