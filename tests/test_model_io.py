"""Model files: llama2.c v0/v1 export/import, a hand-made v0 file, maderix BLZT checkpoints."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from anetrain.errors import AnetrainError
from anetrain.model import ModelConfig, Params, init_params, preset
from anetrain.model._io import ModelFileError
from anetrain.model.llama2c import MAGIC_V1, export_llama2c, import_llama2c
from anetrain.model.original import MAGIC, import_original_checkpoint
from anetrain.model.reference import forward, rope_tables

CFG = ModelConfig(
    dim=24, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=32, vocab_size=19, seq_len=12
)


def logits_of(p: Params) -> np.ndarray:
    tokens = np.random.default_rng(0).integers(0, p.config.vocab_size, (2, 7))
    return forward(p, tokens)[0]


# --- llama2.c --------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("version", [0, 1])
def test_llama2c_roundtrip_is_exact(tmp_path, version: int, tied: bool) -> None:
    cfg = CFG.replace(tied_embeddings=tied)
    p = init_params(cfg, seed=5)
    f = tmp_path / "m.bin"
    export_llama2c(f, p, version=version)
    expected = 4 * (p.flat.size + (CFG.seq_len * CFG.head_dim if version == 0 else 0))
    assert f.stat().st_size == (28 if version == 0 else 256) + expected
    data = f.read_bytes()
    if version == 0:  # llama2.c: a negative vocab_size marks an unshared classifier (wcls last)
        assert struct.unpack("<i", data[20:24])[0] == (CFG.vocab_size if tied else -CFG.vocab_size)
    else:
        assert data[36] == int(tied)
    if not tied:
        assert data[-4 * p["lm_head"].size :] == p["lm_head"].astype("<f4").tobytes()
    cfg2, p2 = import_llama2c(f)
    assert cfg2 == cfg
    assert np.array_equal(p2.flat, p.flat)
    assert np.array_equal(logits_of(p2), logits_of(p))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_llama2c_folds_residual_alpha(tmp_path) -> None:
    cfg = CFG.replace(residual_scaling=True)
    p = init_params(cfg, seed=5)
    export_llama2c(tmp_path / "a.bin", p)
    cfg2, p2 = import_llama2c(tmp_path / "a.bin")
    assert cfg2 == cfg.replace(residual_scaling=False)
    np.testing.assert_allclose(logits_of(p2), logits_of(p), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelFileError, match="no residual scaling"):
        export_llama2c(tmp_path / "b.bin", p, fold_residual_alpha=False)


def test_llama2c_v0_handmade_file(tmp_path) -> None:
    """A file built by hand from run.c's memory_map_weights order."""
    dim, hidden, L, nh, nkv, V, S = 8, 12, 2, 2, 1, 5, 3
    hs = dim // nh
    sizes = [
        ("embed", V * dim),
        ("rms_att", L * dim),
        ("wq", L * dim * dim),
        ("wk", L * dim * nkv * hs),
        ("wv", L * dim * nkv * hs),
        ("wo", L * dim * dim),
        ("rms_ffn", L * dim),
        ("w1", L * hidden * dim),
        ("w2", L * dim * hidden),
        ("w3", L * hidden * dim),
        ("rms_final", dim),
        ("freq_cis_real", S * hs // 2),
        ("freq_cis_imag", S * hs // 2),
    ]
    body = np.arange(sum(n for _, n in sizes), dtype="<f4")
    f = tmp_path / "hand.bin"
    f.write_bytes(struct.pack("<7i", dim, hidden, L, nh, nkv, V, S) + body.tobytes())
    cfg, p = import_llama2c(f)
    assert (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (8, 12, 2, 2, 1)
    assert (cfg.vocab_size, cfg.seq_len, cfg.head_dim) == (5, 3, 4)
    off = 0
    for name, n in sizes[:-2]:
        np.testing.assert_array_equal(p[name].reshape(-1), body[off : off + n], err_msg=name)
        off += n
    assert p["wk"].shape == (2, 4, 8) and p["w2"].shape == (2, 8, 12)


def test_llama2c_v0_rope_tables_match_llama2c_definition(tmp_path) -> None:
    p = init_params(CFG, seed=1)
    export_llama2c(tmp_path / "m.bin", p)
    raw = np.fromfile(tmp_path / "m.bin", dtype="<f4", offset=28)[p.flat.size :]
    half = CFG.seq_len * CFG.head_dim // 2
    # llama2.c model.py: freqs = 1/theta^(arange(0, HD, 2)/HD); cos/sin(outer(t, freqs))
    freqs = 1.0 / 10000.0 ** (np.arange(0, CFG.head_dim, 2) / CFG.head_dim)
    ang = np.outer(np.arange(CFG.seq_len), freqs)
    np.testing.assert_allclose(raw[:half], np.cos(ang).ravel(), atol=1e-7)
    np.testing.assert_allclose(raw[half:], np.sin(ang).ravel(), atol=1e-7)
    cos, _ = rope_tables(CFG.head_dim, np.arange(CFG.seq_len), CFG.rope_base)
    assert cos.shape == (CFG.seq_len, CFG.head_dim // 2)


def test_llama2c_size_and_header_errors(tmp_path) -> None:
    p = init_params(CFG, seed=5)
    good = tmp_path / "good.bin"
    export_llama2c(good, p)
    data = good.read_bytes()
    cases = {
        "short.bin": (data[:-4], "too short"),
        "long.bin": (data + b"\0\0\0\0", "too long"),
        "tiny.bin": (data[:10], "file too short"),
        "empty.bin": (b"", "empty"),
        # an unshared header promises a wcls block after the RoPE tables
        "unshared.bin": (data[:20] + struct.pack("<i", -19) + data[24:], "too short"),
        "zero.bin": (struct.pack("<7i", 8, 8, 0, 2, 2, 5, 4), "implausible"),
        "q80.bin": (struct.pack("<Ii", MAGIC_V1, 2).ljust(256, b"\0"), "Q8_0"),
    }
    for name, (blob, match) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ModelFileError, match=match) as info:
            import_llama2c(tmp_path / name)
        assert name in str(info.value) and isinstance(info.value, AnetrainError)


def test_llama2c_refuses_explicit_head_dim(tmp_path) -> None:
    cfg = ModelConfig(dim=16, n_layers=1, n_heads=4, head_dim=8, hidden_dim=8, vocab_size=5)
    with pytest.raises(ModelFileError, match="head_dim"):
        export_llama2c(tmp_path / "x.bin", Params(cfg))


@pytest.mark.parametrize(
    ("field", "value"), [("rope_base", 1e6), ("norm_eps", 1e-6), ("qk_norm", True)]
)
def test_llama2c_refuses_what_run_c_hard_codes(tmp_path, field, value) -> None:
    # run.c: RoPE base 10000 and RMSNorm eps 1e-5 are constants and there is no QK-norm, so a
    # file written for another value would come back computing different logits.
    cfg = ModelConfig(dim=16, n_layers=1, n_heads=4, hidden_dim=8, vocab_size=5)
    with pytest.raises(ModelFileError, match=f"{field} = "):
        export_llama2c(tmp_path / "x.bin", Params(cfg.replace(**{field: value})))
    assert not (tmp_path / "x.bin").exists()


# --- maderix BLZT checkpoints ------------------------------------------------------------------


def write_blzt(path, params: Params, m: Params, v: Params, version: int, step: int = 300) -> None:
    """Test-only writer following maderix/ANE save_checkpoint (training_dynamic/io.h, CkptHdr)."""
    c = params.config
    tail = (c.n_kv_heads, c.head_dim, c.qd) if version == 4 else (0, 0, 0)
    hdr = struct.pack(
        "<10i2f3d3i3i",
        *(MAGIC, version, step, 1000, c.n_layers, c.vocab_size, c.dim, c.hidden_dim, c.n_heads),
        c.seq_len,
        *(3e-4, 4.25, 0.0, 12.5, 20.0, step, 0, step // 10),
        *tail,
    )
    assert len(hdr) == 96
    order = ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "rms_att", "rms_ffn")
    parts = [hdr]
    for i in range(c.n_layers):
        parts += [params[n][i].astype("<f4").tobytes() for n in order]
        for n in order:
            parts += [m[n][i].astype("<f4").tobytes(), v[n][i].astype("<f4").tobytes()]
    for n in ("rms_final", "embed"):
        parts += [t[n].astype("<f4").tobytes() for t in (params, m, v)]
    path.write_bytes(b"".join(parts))


def random_params(cfg: ModelConfig, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    return Params(cfg, rng.normal(size=cfg.n_params).astype(np.float32))


@pytest.mark.parametrize("version", [2, 4])
def test_original_checkpoint_import(tmp_path, version: int) -> None:
    cfg = CFG if version == 4 else CFG.replace(n_kv_heads=4)  # v2 (static) is MHA only
    p, m, v = (random_params(cfg, s) for s in (1, 2, 3))
    f = tmp_path / "ckpt.bin"
    write_blzt(f, p, m, v, version)
    assert f.read_bytes()[:4] == b"TZLB"  # 0x424C5A54 little-endian
    ck = import_original_checkpoint(f)
    assert ck.config == cfg.replace(residual_scaling=version == 4)
    for got, want in ((ck.params, p), (ck.adam_m, m), (ck.adam_v, v)):
        assert np.array_equal(got.flat, want.flat)
    assert ck.header["step"] == 300 and ck.header["adam_t"] == 30
    assert ck.header["loss"] == pytest.approx(4.25) and ck.header["version"] == version
    assert len(ck.notes) == 1  # v2: no RoPE / no alpha; v4 with GQA: h % KVH pairing


def test_original_checkpoint_errors(tmp_path) -> None:
    p = random_params(CFG, 0)
    f = tmp_path / "c.bin"
    write_blzt(f, p, p, p, 4)
    data = f.read_bytes()
    cases = {
        "magic.bin": (b"XXXX" + data[4:], "not a maderix checkpoint"),
        "v3.bin": (data[:4] + struct.pack("<i", 3) + data[8:], "version 3 is not supported"),
        "short.bin": (data[:-8], "too short"),
        "hdr.bin": (data[:50], "96-byte BLZT header"),
        "qdim.bin": (data[:92] + struct.pack("<i", 7) + data[96:], "q_dim"),
    }
    for name, (blob, match) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ModelFileError, match=match):
            import_original_checkpoint(tmp_path / name)


def test_stories15m_shape_export_is_fast_enough(tmp_path) -> None:
    """A real-sized llama2.c header (stories15M: 60.8 MB) round-trips in well under a second."""
    cfg = preset("stories15m")
    p = Params(cfg)
    p.flat[::997] = 1.5
    export_llama2c(tmp_path / "s.bin", p)
    assert (tmp_path / "s.bin").stat().st_size == 28 + 4 * (cfg.n_params + 256 * 48)
    cfg2, p2 = import_llama2c(tmp_path / "s.bin")
    assert cfg2 == cfg and np.array_equal(p2.flat, p.flat)


def test_headers_describing_huge_models_are_refused_before_allocating(tmp_path) -> None:
    """A 128-byte file whose header claims 2^30-wide layers is a size error, not a NumPy
    ValueError/MemoryError from allocating the model it describes."""
    llama = tmp_path / "huge_llama.bin"
    llama.write_bytes(struct.pack("<7i", 2**30, 2**30, 1000, 2, 2, 512, 32) + bytes(100))
    with pytest.raises(ModelFileError, match="too short"):
        import_llama2c(llama)
    p = random_params(CFG, 0)
    f = tmp_path / "c.bin"
    write_blzt(f, p, p, p, 4)
    data = bytearray(f.read_bytes())
    struct.pack_into("<i", data, 24, 2**30)  # dim
    struct.pack_into("<i", data, 28, 2**30)  # hidden_dim
    struct.pack_into("<i", data, 92, 2**30)  # q_dim = n_heads * head_dim
    (tmp_path / "huge.bin").write_bytes(bytes(data[:200]))
    with pytest.raises(ModelFileError):
        import_original_checkpoint(tmp_path / "huge.bin")
