"""LoRA on the kernel pipeline against ``peft`` wrapping the same tiny random Hugging Face model.

Oracles: peft's adapter gradients through torch autograd (fp32 kernels), peft's scaling, and
peft loading our adapter folder computing our merged model's logits. Base weights are rounded
to fp16 before the folder is written, since anetrain holds a LoRA base in fp16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anetrain.mil.types import FP32, DType
from anetrain.model.config import ModelConfig
from anetrain.model.hf import export_hf, import_hf
from anetrain.model.lora import (
    ADAPTER_CONFIG,
    Adapters,
    LoraError,
    lora_config,
    peft_state_dict,
    write_peft,
)
from anetrain.train.pipeline import DynamicPipeline
from anetrain.train.trainable import LoraTrainable
from hf_models import hf_logits, save_fp16_folder, torch, transformers

peft = pytest.importorskip("peft")
SEQ = 32


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    return save_fp16_folder(tmp_path_factory.mktemp(request.param), request.param)[:2]


def _peft_model(base_folder: Path, adapter: Path, trainable: bool = False):
    base = transformers.AutoModelForCausalLM.from_pretrained(base_folder).float().eval()
    return peft.PeftModel.from_pretrained(base, adapter, is_trainable=trainable).eval()


def _random_adapters(trainable: LoraTrainable, seed: int = 0) -> None:
    """Nonzero B as well (peft's init has B = 0, which would make every dA zero)."""
    rng = np.random.default_rng(seed)
    for name in trainable.values:
        t = trainable.values[name]
        t[...] = rng.normal(0, 0.2, t.shape)


def one_window(
    tr: LoraTrainable, cfg: ModelConfig, *, prestage: bool = True, dtype: DType = FP32
) -> tuple[float, np.ndarray, np.ndarray]:
    """One forward+backward window of random tokens through the kernels into ``tr.grads``:
    (loss, tokens, targets)."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, cfg.vocab_size, SEQ)
    targets = rng.integers(0, cfg.vocab_size, SEQ)
    pipe = DynamicPipeline(
        cfg, dtype=dtype, overlap_blas=False, prestage=prestage, adapters=tr.kernel_adapters
    )
    try:
        tr.stage(pipe)
        loss = pipe.forward_backward(tr.params, tr.sink, tokens, targets)
        pipe.wait()
    finally:
        pipe.close()
    return loss, tokens, targets


@pytest.mark.parametrize(
    "targets, prestage",
    [("q,k,v,o,gate,up,down", True), ("q,v", True), ("o,down", True), ("q,k,gate,down", False)],
)
def test_adapter_gradients_equal_peft_autograd(folder, targets, prestage, tmp_path: Path) -> None:
    """``prestage=False`` is the per-call weight staging large models use."""
    path, _ = folder
    h = import_hf(path, seq_len=SEQ)
    lora = lora_config(h.config, rank=4, alpha=12, targets=targets)
    tr = LoraTrainable(h.params, lora, seed=1)
    _random_adapters(tr)
    loss, tokens, targets_ = one_window(tr, h.config, prestage=prestage)

    write_peft(tmp_path / "ad", tr.values, str(path))
    pm = _peft_model(path, tmp_path / "ad", trainable=True)
    logits = pm(torch.as_tensor(tokens).reshape(1, -1)).logits[0]
    ref_loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(targets_))
    ref_loss.backward()
    ref = {
        n.replace(".default", ""): p.grad.numpy() for n, p in pm.named_parameters() if "lora_" in n
    }
    ours = peft_state_dict(tr.grads)
    assert set(ours) == set(ref) and len(ref) == 2 * len(lora.targets) * h.config.n_layers
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
    for key, g in ref.items():
        assert np.abs(g).max() > 0, key  # a real gradient, not a vacuous match
        np.testing.assert_allclose(ours[key], g, rtol=0, atol=1e-4 * np.abs(g).max(), err_msg=key)


def test_scaling_and_config_equal_peft(folder, tmp_path: Path) -> None:
    path, _ = folder
    h = import_hf(path, seq_len=SEQ)
    lora = lora_config(h.config, rank=4, alpha=6, targets="q,up")
    tr = LoraTrainable(h.params, lora)
    write_peft(tmp_path / "ad", tr.values, str(path))
    pm = _peft_model(path, tmp_path / "ad")
    cfg = pm.peft_config["default"]
    assert cfg.r == 4 and cfg.lora_alpha == 6 and not cfg.use_rslora and cfg.lora_dropout == 0
    assert set(cfg.target_modules) == {"q_proj", "up_proj"}
    q = pm.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == lora.scaling == 1.5
    # peft's init (B = 0): the wrapped model is the base model exactly
    base = transformers.AutoModelForCausalLM.from_pretrained(path).float().eval()
    tokens = np.arange(SEQ) % h.config.vocab_size
    np.testing.assert_array_equal(hf_logits(pm, tokens), hf_logits(base, tokens))
    # A's init draws from peft's bound U(+-1/sqrt(IN))
    a = tr.values["wq.A"]
    assert 0.8 / np.sqrt(h.config.dim) < np.abs(a).max() <= 1 / np.sqrt(h.config.dim)


def test_merged_export_equals_peft_with_our_adapters(folder, tmp_path: Path) -> None:
    path, _ = folder
    h = import_hf(path, seq_len=SEQ)
    tr = LoraTrainable(h.params, lora_config(h.config, rank=3, alpha=5))
    _random_adapters(tr, seed=5)
    write_peft(tmp_path / "ad", tr.values, str(path))
    export_hf(tmp_path / "merged", tr.model_params(), base_config=h.hf_config)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").float()
    tokens = (np.arange(SEQ) * 7) % h.config.vocab_size
    ref = hf_logits(_peft_model(path, tmp_path / "ad"), tokens)
    np.testing.assert_allclose(hf_logits(merged.eval(), tokens), ref, atol=2e-5 * np.abs(ref).max())


def test_bad_lora_settings_are_one_line_errors(folder) -> None:
    cfg = import_hf(folder[0], seq_len=SEQ).config
    for kwargs, match in [
        ({"rank": 0}, "between 1 and"),
        ({"rank": cfg.dim + 1}, "between 1 and"),
        ({"rank": 2, "targets": "q,attn"}, "unknown target 'attn'"),
        ({"rank": 2, "targets": ""}, "no target"),
        ({"rank": 2, "dropout": -0.1}, "--lora-dropout -0.1: must be a probability"),
        ({"rank": 2, "dropout": 1.0}, "--lora-dropout 1.0: must be a probability"),
        ({"rank": 2, "dropout": float("nan")}, "--lora-dropout nan: must be a probability"),
        ({"rank": 2, "alpha": -1.0}, "--lora-alpha"),
        ({"rank": 2, "targets": "q,v,q"}, "'q' given twice"),
    ]:
        with pytest.raises(LoraError, match=match) as err:
            lora_config(cfg, **kwargs)
        assert "\n" not in str(err.value)


def test_targets_take_one_order_whatever_order_they_are_given_in(folder) -> None:
    """The order of --lora-targets changes nothing: not the buffer layout, not the order the
    dropout masks are drawn in (documented as q, k, v, o, gate, up, down), and a resume that
    names the same targets in another order is the same settings."""
    cfg = import_hf(folder[0], seq_len=SEQ).config
    given = lora_config(cfg, rank=2, targets="down,v,q", dropout=0.1)
    assert given.targets == ("q", "v", "down") and given.params == ("wq", "wv", "w2")
    assert given == lora_config(cfg, rank=2, targets="q,v,down", dropout=0.1)
    assert list(Adapters(cfg, given)) == ["wq.A", "wq.B", "wv.A", "wv.B", "w2.A", "w2.B"]


def test_adapters_are_one_flat_buffer(folder) -> None:
    cfg = import_hf(folder[0], seq_len=SEQ).config
    a = Adapters(cfg, lora_config(cfg, rank=2, targets="q,down"))
    assert a["wq.A"].shape == (cfg.n_layers, 2, cfg.dim)
    assert a["w2.B"].shape == (cfg.n_layers, cfg.dim, 2)
    a.flat[...] = 1.0
    assert all((a[n] == 1).all() for n in a)
    assert sum(a[n].size for n in a) == a.flat.size
    assert ADAPTER_CONFIG == "adapter_config.json"


def test_no_frozen_weight_gradient_is_formed(folder, monkeypatch) -> None:
    """The adapter sink replaces the pipeline's dW hook: no [OUT, IN] weight-gradient GEMM runs,
    and the frozen fp16 base is left exactly as it was."""
    import anetrain.train.pipeline as pipeline_mod

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a frozen weight's dW was computed")

    monkeypatch.setattr(pipeline_mod, "matmul_backward_weight", refuse)
    h = import_hf(folder[0], seq_len=SEQ)
    tr = LoraTrainable(h.params, lora_config(h.config, rank=2, targets="k,gate"))
    base = tr.params.flat.copy()
    assert tr.params.dtype == np.float16
    pipe = DynamicPipeline(h.config, dtype=FP32, overlap_blas=False, adapters=tr.kernel_adapters)
    try:
        tr.stage(pipe)
        tokens = np.arange(SEQ) % h.config.vocab_size
        pipe.forward_backward(tr.params, tr.sink, tokens, np.roll(tokens, -1))
        pipe.wait()
    finally:
        pipe.close()
    assert np.abs(tr.grads["wk.B"]).max() > 0  # with peft's B = 0 init, dB carries the signal
    assert np.array_equal(tr.params.flat, base)


@pytest.mark.parametrize("alpha, dropout, targets", [(8, 0.0, "o,down"), (2.5, 0.05, None)])
def test_adapter_config_is_what_peft_itself_writes(folder, alpha, dropout, targets, tmp_path):
    """Our adapter_config.json against the one peft saves for the same LoraConfig, field by
    field (the fields a loader reads), types included (peft writes an integral alpha as int)."""
    import json

    path, _ = folder
    cfg = import_hf(path, seq_len=SEQ).config
    lora = lora_config(cfg, rank=4, alpha=alpha, targets=targets, dropout=dropout)
    write_peft(tmp_path / "ours", LoraTrainable(import_hf(path).params, lora).values, str(path))
    ours = json.loads((tmp_path / "ours" / ADAPTER_CONFIG).read_text())
    modules = [f"{t}_proj" for t in lora.targets]
    ref_cfg = peft.LoraConfig(
        r=4, lora_alpha=alpha, lora_dropout=dropout, task_type="CAUSAL_LM",
        target_modules=modules, base_model_name_or_path=str(path),
    )  # fmt: skip
    ref_cfg.save_pretrained(str(tmp_path / "peft"))
    ref = json.loads((tmp_path / "peft" / ADAPTER_CONFIG).read_text())
    for key in ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "bias",
                "fan_in_fan_out", "use_rslora", "use_dora", "base_model_name_or_path",
                "modules_to_save"):  # fmt: skip
        assert (ours[key], type(ours[key])) == (ref[key], type(ref[key])), key
    assert sorted(ours["target_modules"]) == sorted(ref["target_modules"])
