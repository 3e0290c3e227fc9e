"""LoRA dropout (``--lora-dropout P > 0``) against ``peft`` wrapping the same tiny random model.

peft's forward is ``W x + s B A dropout(x)`` with one ``nn.Dropout`` per targeted module. Its
dropout is made deterministic by replacing each module's ``lora_dropout["default"]`` with a
multiplication by the mask our step draws for that module, regenerated here independently from
the documented stream (``default_rng([seed, window])``, per layer one draw per target in target
order), so a step that shares a mask, forgets the ``1/(1-p)`` scale or the mask in the
input gradient disagrees with peft. Then: p > 0 changes training, the same seed repeats it to
the bit, and resume continues the mask stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anetrain.data.tokens import TokenFile, write_tokens
from anetrain.mil.types import FP16, FP32, DType
from anetrain.model.config import ModelConfig
from anetrain.model.hf import _LAYER_KEYS, import_hf
from anetrain.model.lora import LoraConfig, lora_config, peft_state_dict, write_peft
from anetrain.train.loop import TrainConfig, Trainer
from anetrain.train.trainable import LoraAdapterPath, LoraTrainable
from hf_models import save_fp16_folder, torch, transformers
from test_lora import _random_adapters, one_window

peft = pytest.importorskip("peft")
SEQ, P, SEED = 32, 0.3, 7


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fp16_folder(tmp_path_factory.mktemp(request.param), request.param)[0]


def oracle_masks(
    cfg: ModelConfig, lora: LoraConfig, window: int
) -> dict[tuple[int, str], np.ndarray]:
    """The masks window ``window`` draws, from the documented stream: bool [IN, S]."""
    width = {"wq": cfg.dim, "wk": cfg.dim, "wv": cfg.dim, "wo": cfg.qd, "w1": cfg.dim,
             "w3": cfg.dim, "w2": cfg.hidden_dim}  # fmt: skip
    rng = np.random.default_rng([SEED, window])
    return {
        (layer, n): rng.random((width[n], SEQ), np.float32) >= lora.dropout
        for layer in range(cfg.n_layers)
        for n in lora.params
    }


class _FixedDropout(torch.nn.Module):
    """peft's dropout with a given mask: ``x * mask / (1-p)``."""

    def __init__(self, mask: np.ndarray, p: float) -> None:
        super().__init__()
        scaled = mask.T.astype(np.float32) * np.float32(1 / (1 - p))  # [S, IN]
        self.register_buffer("m", torch.as_tensor(scaled)[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.m


def ours_and_peft(
    folder: Path, targets: str, tmp_path: Path, *, prestage: bool = True, dtype: DType = FP32
) -> tuple[float, float, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(our loss, peft's, our adapter gradients, peft's) of one window with dropout ``P``."""
    h = import_hf(folder, seq_len=SEQ)
    lora = lora_config(h.config, rank=4, alpha=12, targets=targets, dropout=P)
    tr = LoraTrainable(h.params, lora, seed=SEED)
    _random_adapters(tr)
    loss, tokens, targets_ = one_window(tr, h.config, prestage=prestage, dtype=dtype)
    masks = oracle_masks(h.config, lora, window=0)
    assert tr.adapter_path is not None and tr.adapter_path.masks.keys() == masks.keys()
    assert all(np.array_equal(tr.adapter_path.masks[k], m) for k, m in masks.items())

    write_peft(tmp_path / "ad", tr.values, str(folder))
    base = transformers.AutoModelForCausalLM.from_pretrained(folder).float().eval()
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "ad", is_trainable=True).eval()
    layers = pm.base_model.model.model.layers
    for (layer, name), mask in masks.items():
        module = layers[layer].get_submodule(_LAYER_KEYS[name].removesuffix(".weight"))
        assert isinstance(module.lora_dropout["default"], torch.nn.Dropout)  # p > 0 in peft too
        module.lora_dropout["default"] = _FixedDropout(mask, P)
    logits = pm(torch.as_tensor(tokens).reshape(1, -1)).logits[0]
    ref_loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(targets_))
    ref_loss.backward()
    ref = {
        n.replace(".default", ""): p.grad.numpy() for n, p in pm.named_parameters() if "lora_" in n
    }
    return loss, ref_loss.item(), peft_state_dict(tr.grads), ref


def assert_match(result: tuple, rtol: float) -> None:
    loss, ref_loss, ours, ref = result
    assert set(ours) == set(ref)
    assert loss == pytest.approx(ref_loss, rel=rtol / 10)
    for key, g in ref.items():
        assert np.abs(g).max() > 0, key
        np.testing.assert_allclose(ours[key], g, rtol=0, atol=rtol * np.abs(g).max(), err_msg=key)


@pytest.mark.parametrize(
    "targets, prestage",
    [("q,k,v,o,gate,up,down", True), ("o,down", True), ("q,k,gate,down", False)],
)
def test_dropout_gradients_equal_peft(folder, targets, prestage, tmp_path: Path) -> None:
    """fp32 kernels: to 1e-4 of each tensor's largest gradient (the loss to 1e-5);
    ``prestage=False`` is the per-call weight staging of large models."""
    assert_match(ours_and_peft(folder, targets, tmp_path, prestage=prestage), 1e-4)


def test_dropout_gradients_fp16_kernels(folder, tmp_path: Path) -> None:
    """fp16 kernels round every activation and weight they hold: within 1e-1 of each tensor's
    largest gradient. Measured: 3.5e-2 (Qwen3), 6.5e-2 (Llama); the same fp16 kernels without
    dropout are off by 1.5e-2 and 1.3e-1 (the tiny Llama's activations round worse)."""
    assert_match(ours_and_peft(folder, "q,k,v,o,gate,up,down", tmp_path, dtype=FP16), 1e-1)


ORIGINAL_DROPPED, ORIGINAL_INIT = LoraAdapterPath.dropped, LoraAdapterPath.__init__


def _share_qkv_mask(self: LoraAdapterPath, layer: int, name: str, x: np.ndarray) -> np.ndarray:
    return ORIGINAL_DROPPED(self, layer, "wq" if name in ("wk", "wv") else name, x)


def _unscaled(self: LoraAdapterPath, *args: object) -> None:
    ORIGINAL_INIT(self, *args)  # type: ignore[arg-type]
    self.keep_scale = np.float32(1.0)


def _dx_without_mask(self: LoraAdapterPath, layer: int, dx: np.ndarray, *terms) -> np.ndarray:
    for name, dy in terms:
        if name in self.targets:
            a, b = self.adapters[f"{name}.A"][layer], self.adapters[f"{name}.B"][layer]
            dx = dx + a.T @ (self.scaling * (b.T @ dy))
    return dx


@pytest.mark.parametrize(
    "attr, wrong",
    [("dropped", _share_qkv_mask), ("__init__", _unscaled), ("add_dx", _dx_without_mask)],
    ids=["one mask for q,k,v", "no 1/(1-p)", "no mask in dx"],
)
def test_a_wrong_dropout_fails_the_oracle(folder, attr, wrong, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(LoraAdapterPath, attr, wrong)
    result = ours_and_peft(folder, "q,k,v,o,gate,up,down", tmp_path)
    with pytest.raises(AssertionError):
        assert_match(result, 1e-4)
    if attr == "add_dx":  # the forward is right: only the gradients below the last layer differ
        assert result[0] == pytest.approx(result[1], rel=1e-5)


# ---- training with dropout ---------------------------------------------------------------------


def _trainer(
    folder: Path, out: Path, *, seed: int = SEED, dropout: float = P, resume: bool = False
) -> Trainer:
    h = import_hf(folder, seq_len=SEQ)
    path = out.parent / f"{out.name}.bin"
    write_tokens(path, np.random.default_rng(1).integers(0, h.config.vocab_size, 4000))
    data = TokenFile(path, vocab_size=h.config.vocab_size)
    lora = lora_config(h.config, rank=4, dropout=dropout)
    tr = LoraTrainable(h.params, lora, seed=seed)
    cfg = TrainConfig(steps=4, accum=2, lr=1e-2, warmup=0, eval_every=100, eval_windows=1)
    return Trainer(h.config, data, cfg, out, resume=resume, trainable=tr)


def _run(trainer: Trainer, steps: int | None = None) -> list[float]:
    if steps is None:
        trainer.run()
        return trainer.history
    losses = [trainer.train_step().loss for _ in range(steps)]
    trainer.save(trainer.validate())
    trainer._metrics.close()
    trainer.pipeline.close()
    return losses


def test_dropout_seeds_differ_same_seed_repeats_resume_continues(folder, tmp_path: Path) -> None:
    a = _trainer(folder, tmp_path / "a")
    _run(a)  # (one trainer at a time: closing a pipeline restores the BLAS thread count)
    b = _trainer(folder, tmp_path / "b")
    assert _run(b) == a.history  # the same seed: bit for bit
    assert np.array_equal(a.trainable.values.flat, b.trainable.values.flat)
    assert a.trainable.adapter_path.window == 8  # every accumulation window drew fresh masks
    # another mask seed (the same adapters' init) trains otherwise, and so does no dropout; step
    # 0's loss is the base's either way (B = 0)
    c = _trainer(folder, tmp_path / "c")
    c.trainable.adapter_path.seed += 1
    assert all(x != y for x, y in zip(_run(c)[1:], a.history[1:], strict=True))
    plain = _trainer(folder, tmp_path / "d", dropout=0.0)
    assert plain.trainable.adapter_path.p == 0 and plain.trainable.adapter_path.mask_bytes(SEQ) == 0
    assert all(x != y for x, y in zip(_run(plain)[1:], a.history[1:], strict=True))
    # 2 steps + checkpoint + resume + 2 = 4 straight, the mask stream included
    first = _trainer(folder, tmp_path / "r")
    split = _run(first, 2)
    resumed = _trainer(folder, tmp_path / "r", seed=SEED + 5, resume=True)  # seed from the record
    assert resumed.step == 2 and resumed.trainable.adapter_path.seed == SEED
    assert split + _run(resumed) == a.history
    assert np.array_equal(resumed.trainable.values.flat, a.trainable.values.flat)
    assert np.array_equal(resumed.adam.m, a.adam.m)


@pytest.mark.parametrize("targets", ["q,k,v,o,gate,up,down", "o,down"])
def test_memory_estimate_counts_the_masks_a_window_holds(folder, targets) -> None:
    """The pre-allocation estimate adds what one window's masks really take (measured on the
    masks a forward+backward leaves, all layers' at once) plus the largest fp32 draw."""
    from anetrain import memory

    h = import_hf(folder, seq_len=SEQ)
    lora = lora_config(h.config, rank=4, targets=targets, dropout=P)
    tr = LoraTrainable(h.params, lora, seed=SEED)
    one_window(tr, h.config)
    assert tr.adapter_path is not None
    held = sum(m.nbytes for m in tr.adapter_path.masks.values())
    assert len(tr.adapter_path.masks) == h.config.n_layers * len(lora.targets)
    widest = max(m.shape[0] for m in tr.adapter_path.masks.values())
    assert tr.adapter_path.mask_bytes(SEQ) == held + widest * SEQ * 4
    n = tr.values.flat.size
    plain = memory.training_bytes(h.config, n)
    with_masks = memory.training_bytes(h.config, n, tr.adapter_path.mask_bytes(SEQ))
    assert with_masks - plain == held + widest * SEQ * 4


def test_memory_estimate_of_qwen3_0_6b_dropout_masks() -> None:
    """At the Qwen3-0.6B shape (28 layers, window 256, all seven targets: inputs 5 x 1024,
    2048 and 3072 wide) the masks take 28 * 10240 * 256 bytes = 73.4 MB."""
    from anetrain.model.config import load_config
    from anetrain.model.lora import Adapters

    cfg = load_config("qwen3-0.6b")
    assert (cfg.n_layers, cfg.seq_len, cfg.dim, cfg.qd, cfg.hidden_dim) == (28, 256, 1024, 2048,
                                                                            3072)  # fmt: skip
    lora = lora_config(cfg, rank=1, dropout=0.05)
    masks = LoraAdapterPath(Adapters(cfg, lora), seed=0).mask_bytes(cfg.seq_len)
    assert masks == 28 * 10240 * 256 + 3072 * 256 * 4  # 73.4 MB + one 3.1 MB draw
