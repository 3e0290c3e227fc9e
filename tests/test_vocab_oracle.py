"""Fine-tuning pretrained weights trains over the whole vocabulary, as peft and transformers do.

Oracle: a few Trainer steps (fp32 kernels) on a tiny random Qwen3 folder, LoRA and full
fine-tuning, against torch training the same model (peft-wrapped for LoRA) on the very windows
the Trainer drew, with torch's AdamW and clip_grad_norm_ set as the Trainer applies them
(betas, eps, decoupled weight decay with norm weights exempt, the Trainer's per-step lr). The
fine-tuning data holds only some of the vocabulary's ids: over the data's ids alone (the
compacted softmax training from scratch uses) neither the losses nor the weights would match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from anetrain.data.tokens import TokenFile, write_tokens
from anetrain.model.hf import export_hf, import_hf
from anetrain.model.lora import lora_config, peft_state_dict, write_peft
from anetrain.train.loop import TrainConfig, Trainer, TrainError
from anetrain.train.optim import AdamWConfig
from anetrain.train.trainable import FullTrainable, LoraTrainable
from hf_models import save_fp16_folder, torch, transformers

peft = pytest.importorskip("peft")
SEQ, STEPS, ACCUM, CLIP = 16, 3, 2, 0.5
USED = 70  # of the folder's 320 ids, as in a small fine-tuning set


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny random qwen3 folder, token file over USED of its ids)."""
    root = tmp_path_factory.mktemp("vocab")
    folder, _, _ = save_fp16_folder(root / "hf", "qwen3")
    rng = np.random.default_rng(0)
    ids = rng.choice(320, USED, replace=False)
    write_tokens(root / "t.bin", rng.choice(ids, 4000))
    return folder, root / "t.bin"


def _train(folder: Path, data: Path, out: Path, lora: bool, vocab: str = "auto") -> Any:
    """STEPS Trainer steps from the folder's weights; returns (trainer, step records, the
    windows each step trained on)."""
    h = import_hf(folder, seq_len=SEQ)
    cfg = TrainConfig(
        steps=STEPS, lr=1e-2, accum=ACCUM, warmup=1, clip=CLIP, fp16=False, vocab=vocab,
        eval_every=10**6, ckpt_every=10**6,
    )  # fmt: skip
    if lora:
        tr: Any = LoraTrainable(h.params, lora_config(h.config, 4, 8), seed=1)
        write_peft(out / "start", tr.values, str(folder))  # peft starts from our init
    else:
        tr = FullTrainable(h.params)
    trainer = Trainer(h.config, TokenFile(data, vocab_size=320), cfg, out, trainable=tr,
                      pretrained=True)  # fmt: skip
    windows: list[tuple[np.ndarray, np.ndarray]] = []
    inner = trainer.pipeline.forward_backward

    def recording(params: Any, sink: Any, inputs: Any, targets: Any, *rest: Any) -> float:
        windows.append((np.array(inputs), np.array(targets)))
        return inner(params, sink, inputs, targets, *rest)

    trainer.pipeline.forward_backward = recording  # type: ignore[method-assign]
    try:
        records = [trainer.train_step() for _ in range(STEPS)]
    finally:
        trainer.pipeline.close()
    return trainer, records, [windows[i : i + ACCUM] for i in range(0, len(windows), ACCUM)]


def _torch_train(model: Any, steps: list[Any], lrs: list[float]) -> tuple[list[float], list[float]]:
    """torch's AdamW on ``model``'s trainable parameters: (losses, grad norms) per step."""
    c = AdamWConfig()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if "norm" not in n], "weight_decay": c.weight_decay},
        {"params": [p for n, p in named if "norm" in n], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(c.beta1, c.beta2), eps=c.eps)
    losses, norms = [], []
    for windows, lr in zip(steps, lrs, strict=True):
        opt.zero_grad()
        loss = sum(
            torch.nn.functional.cross_entropy(
                model(torch.as_tensor(x).reshape(1, -1)).logits[0], torch.as_tensor(y)
            )
            for x, y in windows
        ) / len(windows)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p for _, p in named], CLIP)))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        losses.append(float(loss.detach()))
    return losses, norms


def _check_steps(records: list[Any], losses: list[float], norms: list[float]) -> None:
    ours = [r.loss for r in records]
    np.testing.assert_allclose(ours, losses, rtol=1e-5)
    np.testing.assert_allclose([r.grad_norm for r in records], norms, rtol=1e-4)
    assert max(norms) > CLIP  # the clipping is exercised, not only the plain update


def _close(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], *, norm: bool = False) -> None:
    """Every tensor within 1e-4 of the reference's largest value, element by element; with
    ``norm``, the difference's L2 norm within 1e-4 of the reference's (Adam's first steps are
    nearly ``lr * sign(g)``, so the odd weight whose gradient is ~0 by cancellation moves by a
    rounding-sized gradient in either trainer: measured, 2 of 4096 in one o_proj)."""
    assert set(ours) == set(ref) and ref
    for key, value in ref.items():
        if norm:
            rel = np.linalg.norm(ours[key] - value) / np.linalg.norm(value)
            assert rel < 1e-4, (key, rel)
        else:
            np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-4 * np.abs(value).max(),
                                       err_msg=key)  # fmt: skip


def test_lora_steps_equal_peft_training_over_the_full_vocabulary(setup, tmp_path: Path) -> None:
    folder, data = setup
    trainer, records, steps = _train(folder, data, tmp_path, lora=True)
    assert trainer.cfg.vocab == "full" and trainer.vocab_ids() is None
    base = transformers.AutoModelForCausalLM.from_pretrained(folder).float()
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "start", is_trainable=True)
    losses, norms = _torch_train(pm, steps, [r.lr for r in records])
    _check_steps(records, losses, norms)
    ref = {
        n.replace(".default", ""): p.detach().numpy()
        for n, p in pm.named_parameters()
        if "lora_" in n
    }
    _close(peft_state_dict(trainer.trainable.values), ref)


def test_full_fine_tuning_steps_equal_transformers_training(setup, tmp_path: Path) -> None:
    folder, data = setup
    trainer, records, steps = _train(folder, data, tmp_path, lora=False)
    assert trainer.cfg.vocab == "full"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).float()
    losses, norms = _torch_train(model, steps, [r.lr for r in records])
    _check_steps(records, losses, norms)
    export_hf(tmp_path / "ours", trainer.params, base_config=import_hf(folder).hf_config)
    ours = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").float()
    _close(
        {n: p.detach().numpy() for n, p in ours.named_parameters()},
        {n: p.detach().numpy() for n, p in model.named_parameters()},
        norm=True,
    )


def test_the_data_vocabulary_is_another_objective(setup, tmp_path: Path) -> None:
    """``vocab="data"`` (from-scratch training's compacted softmax) on the same run: a lower
    loss than peft's, so the full vocabulary above is what makes the losses agree."""
    folder, data = setup
    full = _train(folder, data, tmp_path / "full", lora=True)[1]
    trainer, compact, _ = _train(folder, data, tmp_path / "data", lora=True, vocab="data")
    assert trainer.pipeline.vocab.ids.size == USED
    assert compact[0].loss < full[0].loss - 0.5


def test_auto_is_the_data_vocabulary_from_scratch_and_a_resume_keeps_the_runs(
    setup, tmp_path: Path
) -> None:
    from anetrain.model.config import ModelConfig

    _, data = setup
    model = ModelConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=2,
                        vocab_size=320, seq_len=SEQ)  # fmt: skip
    cfg = TrainConfig(steps=2, accum=1, eval_every=10**6, ckpt_every=1)
    t = Trainer(model, TokenFile(data, vocab_size=320), cfg, tmp_path)
    assert t.cfg.vocab == "data" and t.pipeline.vocab.ids.size == USED
    t.train_step()
    t.save()
    t.pipeline.close()
    t._metrics.close()
    resumed = Trainer(model, TokenFile(data, vocab_size=320), cfg, tmp_path, resume=True,
                      pretrained=True)  # fmt: skip
    assert resumed.cfg.vocab == "data"  # auto on a resume: the run's own, even if pretrained
    resumed.pipeline.close()
    resumed._metrics.close()
    full = TrainConfig(steps=2, accum=1, eval_every=10**6, ckpt_every=1, vocab="full")
    with pytest.raises(TrainError, match=r"over the data vocabulary .* a resume keeps it"):
        Trainer(model, TokenFile(data, vocab_size=320), full, tmp_path, resume=True)
    with pytest.raises(TrainError, match="vocab must be one of auto, data, full"):
        TrainConfig(vocab="all")
