"""ModelConfig: presets, derived sizes, TOML loading and typed errors, hashing, params."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anetrain.errors import AnetrainError
from anetrain.model import (
    PRESETS,
    ConfigError,
    ConfigKeyError,
    ConfigTypeError,
    ConfigValueError,
    ModelConfig,
    init_params,
    load_config,
    param_shapes,
    preset,
)
from anetrain.model.params import NO_DECAY, Params


def test_presets_match_maderix_param_counts() -> None:
    # maderix/ANE training/README.md: Stories110M 109.53M, Qwen3-0.6B 596.04M (440.46M + 155.58M
    # embed) without QK-norm; the real Qwen3-0.6B adds 28 layers x 2 x 128 q/k-norm weights.
    assert round(preset("stories110m").n_params / 1e6, 2) == 109.53
    q = preset("qwen3-0.6b")
    assert q.n_params == 596_049_920 == q.replace(qk_norm=False).n_params + 28 * 2 * 128
    assert (q.qk_norm, q.rope_base, q.norm_eps, q.vocab_size) == (True, 1e6, 1e-6, 151936)
    assert (q.head_dim, q.qd, q.kvd, q.gqa_ratio) == (128, 2048, 1024, 2)
    assert round(preset("stories15m").n_params / 1e6, 1) == 15.2
    tiny = preset("tiny")
    assert tiny.vocab_size == 512 and tiny.hidden_dim % 32 == 0
    assert all(preset(n).seq_len == 256 for n in PRESETS if n != "tiny")


def test_defaults_and_res_alpha() -> None:
    c = ModelConfig(dim=64, n_layers=8, n_heads=4, hidden_dim=96, vocab_size=10)
    assert (c.n_kv_heads, c.head_dim, c.seq_len, c.norm_eps, c.rope_base) == (
        4,
        16,
        256,
        1e-5,
        10000.0,
    )
    assert c.res_alpha == 1.0
    assert c.replace(residual_scaling=True).res_alpha == pytest.approx(0.25)  # 1/sqrt(16)


def test_arch_hash_is_stable_and_ignores_seq_len() -> None:
    tiny = preset("tiny")
    # Hard-coded: a change here invalidates every stored checkpoint's compatibility check.
    assert tiny.arch_hash() == "783c98ecf731f95b"
    assert tiny.replace(seq_len=32).arch_hash() == tiny.arch_hash()
    assert tiny.replace(residual_scaling=True).arch_hash() != tiny.arch_hash()
    assert "qk_norm" not in tiny.arch_dict()  # added later: absent at its default
    assert tiny.replace(qk_norm=True).arch_hash() != tiny.arch_hash()


def test_diff_names_fields() -> None:
    a = preset("tiny")
    assert a.diff(a) == []
    assert a.diff(a.replace(dim=256, head_dim=64)) == ["dim: 128 -> 256", "head_dim: 32 -> 64"]


def test_load_toml_with_base_and_model_table(tmp_path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[model]\nbase = "stories15m"\nn_layers = 2\nresidual_scaling = true\n')
    c = load_config(f)
    assert c == preset("stories15m").replace(n_layers=2, residual_scaling=True)
    g = tmp_path / "flat.toml"
    g.write_text(c.to_toml())
    assert load_config(str(g)) == c
    assert load_config("tiny") == preset("tiny")


@pytest.mark.parametrize(
    ("body", "err", "match"),
    [
        ("dimm = 64", ConfigKeyError, "did you mean 'dim'"),
        ('base = "stories15"', ConfigKeyError, "did you mean 'stories15m'"),
        ('base = "tiny"\ndim = "128"', ConfigTypeError, "dim must be int, got str"),
        ('base = "tiny"\nn_layers = 2.0', ConfigTypeError, "n_layers must be int"),
        ('base = "tiny"\nresidual_scaling = 1', ConfigTypeError, "residual_scaling must be bool"),
        ('base = "tiny"\ndim = 130', ConfigValueError, "not divisible by n_heads"),
        ('base = "tiny"\nn_kv_heads = 3', ConfigValueError, "not divisible by n_kv_heads"),
        ('base = "tiny"\nhead_dim = 31', ConfigValueError, "must be even"),
        ('base = "tiny"\nhidden_dim = 0', ConfigValueError, "hidden_dim must be positive"),
        ('base = "tiny"\nvocab_size = -5', ConfigValueError, "vocab_size must be positive"),
        ('base = "tiny"\nnorm_eps = 0', ConfigValueError, "norm_eps must be positive"),
        ("dim = 64", ConfigKeyError, "missing"),
        ("dim = [", ConfigError, "invalid TOML"),
    ],
)
def test_load_errors_are_typed_and_name_the_file(tmp_path, body, err, match) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body + "\n")
    with pytest.raises(err, match=match) as info:
        load_config(f)
    assert str(f) in str(info.value)
    assert isinstance(info.value, AnetrainError)


def test_unknown_preset_and_missing_file() -> None:
    with pytest.raises(ConfigKeyError, match="did you mean 'stories42m'"):
        load_config("stories42")
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.toml")


def test_float_fields_accept_ints() -> None:
    c = ModelConfig(dim=8, n_layers=1, n_heads=2, hidden_dim=8, vocab_size=4, rope_base=500)
    assert isinstance(c.rope_base, float)
    untied = c.replace(tied_embeddings=False)  # a separate classifier: V*D more parameters
    assert untied.n_params == c.n_params + 4 * 8 and untied.arch_hash() != c.arch_hash()
    p = Params(untied)
    assert p.classifier is p["lm_head"] and p["lm_head"].shape == (4, 8)
    tied = Params(c)
    assert tied.classifier is tied["embed"]


def test_params_are_views_of_one_buffer() -> None:
    cfg = ModelConfig(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=24, vocab_size=9)
    p = Params(cfg)
    assert p.flat.size == cfg.n_params
    assert list(p) == list(param_shapes(cfg))
    p["wk"][1, 3, 5] = 7.0
    assert p.layer(1).wk[3, 5] == 7.0 and np.count_nonzero(p.flat) == 1
    assert p["wq"].shape == (2, 16, 16) and p["wk"].shape == (2, 8, 16)
    mask = p.decay_mask()
    assert mask.sum() == cfg.n_params - (2 * 2 * 16 + 16)
    for name in (n for n in NO_DECAY if n in p.offsets):
        lo, hi = p.offsets[name]
        assert not mask[lo:hi].any()
    qk = Params(cfg.replace(qk_norm=True))
    assert qk["q_norm"].shape == qk["k_norm"].shape == (2, 4)
    assert qk.layer(1).q_norm.shape == (4,) and p.layer(1).q_norm is None
    assert qk.decay_mask().sum() == mask.sum()  # the q/k norms are not decayed


def test_init_matches_scratch_init_scalings() -> None:
    cfg = ModelConfig(
        dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=50, residual_scaling=True
    )
    p = init_params(cfg, seed=1)
    a = cfg.res_alpha
    bounds = {
        "embed": 0.02,
        "wq": 64**-0.5,
        "wk": 64**-0.5,
        "wv": 64**-0.5,
        "wo": a * 64**-0.5,  # 1/sqrt(QD) * alpha, QD = 64 here
        "w1": 128**-0.5,
        "w2": a * 64**-0.5,  # 1/sqrt(D) * alpha (sic, maderix/ANE training_dynamic --scratch init)
        "w3": 128**-0.5,
    }
    for name, b in bounds.items():
        t = p[name]
        assert np.abs(t).max() <= b * (1 + 1e-6)
        assert np.abs(t).max() > 0.95 * b  # actually spans the range
    for name in (n for n in NO_DECAY if n in p.offsets):
        assert (p[name] == 1).all()
    assert p.dtype == np.float32
    assert np.array_equal(init_params(cfg, seed=1).flat, p.flat)
    assert not np.array_equal(init_params(cfg, seed=2).flat, p.flat)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("tiny").dim = 3  # type: ignore[misc]


def test_shipped_example_config_loads() -> None:
    from pathlib import Path

    from anetrain.model.config import load_config

    path = Path(__file__).resolve().parents[1] / "examples" / "configs" / "tiny-gqa.toml"
    cfg = load_config(path)
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.residual_scaling) == (4, 2, True)
    assert cfg.dim == load_config("tiny").dim


def test_toml_with_a_byte_order_mark_loads(tmp_path) -> None:
    plain, bom = tmp_path / "plain.toml", tmp_path / "bom.toml"
    text = 'base = "tiny"\ndim = 48\n'
    plain.write_text(text, encoding="utf-8")
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_config(bom) == load_config(plain)
