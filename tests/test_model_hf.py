"""Hugging Face Llama/Qwen3 folders against ``transformers`` itself: logits, gradients, greedy
generation, export round trips, the RoPE permutation and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anetrain.model import ModelConfig, init_params
from anetrain.model._io import ModelFileError
from anetrain.model.generate import generate
from anetrain.model.hf import HFModelError, export_hf, half_to_interleaved, import_hf
from anetrain.model.loader import load_model
from anetrain.model.reference import backward, forward, rope_forward, rope_tables
from hf_models import build_model, hf_logits, save_folder, torch, transformers

KINDS = ["llama", "qwen3", "llama-untied"]  # untied: a separate lm_head (most Llama checkpoints)
TOKENS = np.array([3, 17, 42, 99, 7, 120, 5, 64, 150, 11, 2, 88])


@pytest.fixture(scope="module", params=KINDS)
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    kind, untied = request.param.removesuffix("-untied"), request.param.endswith("-untied")
    path = tmp_path_factory.mktemp(request.param)
    return save_folder(path, kind, **({"tie_word_embeddings": False} if untied else {}))


def test_config_maps_every_field(folder) -> None:
    path, model, _ = folder
    h = import_hf(path)
    c, hf = h.config, model.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim) == (
        hf.hidden_size,
        hf.num_hidden_layers,
        hf.num_attention_heads,
        hf.num_key_value_heads,
        hf.head_dim,
        hf.intermediate_size,
    )
    assert (c.vocab_size, c.norm_eps) == (hf.vocab_size, hf.rms_norm_eps)
    assert c.rope_base == hf.rope_parameters["rope_theta"] != 10000.0
    assert c.qk_norm == (hf.model_type == "qwen3")
    assert c.tied_embeddings == hf.tie_word_embeddings


def test_logits_equal_transformers(folder) -> None:
    path, model, _ = folder
    params = load_model(path).params
    ours, _, _ = forward(params, TOKENS[None], dtype=np.float64)
    ref = hf_logits(model, TOKENS)
    np.testing.assert_allclose(ours[0], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def _hf_grads(model, tokens: np.ndarray) -> dict[str, np.ndarray]:
    model.zero_grad()
    ids = torch.as_tensor(tokens[None], dtype=torch.long)
    logits = model(ids[:, :-1]).logits[0]
    loss = torch.nn.functional.cross_entropy(logits.double(), ids[0, 1:])
    loss.backward()
    return {n: p.grad.double().numpy() for n, p in model.named_parameters()}


def test_reference_gradients_equal_torch_autograd(folder, tmp_path: Path) -> None:
    """Our backward, exported the same way as weights, is transformers' autograd gradient."""
    path, model, _ = folder
    params = import_hf(path).params
    _, _, cache = forward(params, TOKENS[None, :-1], TOKENS[None, 1:], dtype=np.float64)
    grads = backward(params, cache)
    export_hf(tmp_path / "g", grads.astype(np.float32))  # same permutation as the weights
    from safetensors.numpy import load_file

    ours = load_file(str(tmp_path / "g" / "model.safetensors"))
    ref = _hf_grads(model, TOKENS)
    if model.config.tie_word_embeddings:
        ref.pop("lm_head.weight", None)  # tied: its gradient is inside embed_tokens'
    assert set(ref) == set(ours)
    for name, g in ref.items():
        scale = np.abs(g).max()
        np.testing.assert_allclose(ours[name], g, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_greedy_generation_equals_transformers_generate(folder) -> None:
    path, model, _ = folder
    params = load_model(path).params
    prompt = [int(t) for t in TOKENS[:5]]
    ours = generate(params, params.config, prompt, 12, temperature=0.0)
    with torch.no_grad():
        out = model.generate(
            torch.as_tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),  # no id is padding
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert ours == out[0, len(prompt) :].tolist()


def test_export_then_from_pretrained_same_logits(folder, tmp_path: Path) -> None:
    path, model, _ = folder
    h = import_hf(path)
    out = export_hf(tmp_path / "out", h.params, tokenizer=path, base_config=h.hf_config)
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    again = transformers.AutoModelForCausalLM.from_pretrained(out).float().eval()
    assert type(again) is type(model)
    np.testing.assert_allclose(hf_logits(again, TOKENS), hf_logits(model, TOKENS), atol=1e-6)
    # import -> export -> import is the identity on the weights
    assert np.array_equal(import_hf(out).params.flat, h.params.flat)


@pytest.mark.parametrize(
    "changes",
    [
        {},  # Llama, interleaved RoPE born in anetrain
        {"qk_norm": True, "rope_base": 1e6, "norm_eps": 1e-6},  # Qwen3
        {"residual_scaling": True},  # alpha folded into wo/w2 on export
    ],
)
def test_our_interleaved_models_export_exactly(changes, tmp_path: Path) -> None:
    cfg = ModelConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=160, seq_len=32
    ).replace(**changes)
    params = init_params(cfg, seed=3)
    params.flat[...] *= 4  # larger weights: attention that is not uniform, so RoPE matters
    if cfg.qk_norm:
        rng = np.random.default_rng(0)
        params["q_norm"][...] = rng.uniform(0.5, 1.5, params["q_norm"].shape)
        params["k_norm"][...] = rng.uniform(0.5, 1.5, params["k_norm"].shape)
    export_hf(tmp_path / "m", params)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").float().eval()
    ours, _, _ = forward(params, TOKENS[None], dtype=np.float64)
    ref = hf_logits(model, TOKENS)
    np.testing.assert_allclose(ours[0], ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_half_split_rotation_is_the_permuted_interleaved_rotation() -> None:
    """HF's rotate_half convention, written out independently, against our interleaved RoPE."""
    hd, rng = 8, np.random.default_rng(1)
    x_hf = rng.normal(size=(5, hd))
    pos = np.arange(5)
    inv = 10000.0 ** (-np.arange(0, hd, 2) / hd)
    ang = np.concatenate([pos[:, None] * inv] * 2, axis=1)  # HF: emb = cat(freqs, freqs)
    rot_half = np.concatenate([-x_hf[:, hd // 2 :], x_hf[:, : hd // 2]], axis=1)
    y_hf = x_hf * np.cos(ang) + rot_half * np.sin(ang)
    perm = half_to_interleaved(hd)
    cos, sin = rope_tables(hd, pos, 10000.0, np.float64)
    assert np.allclose(rope_forward(x_hf[:, perm], cos, sin), y_hf[:, perm])


# --- bad input -------------------------------------------------------------------------------


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architectures": ["MistralForCausalLM"]}, 'architectures = "MistralForCausalLM"'),
        ({"hidden_act": "gelu"}, 'hidden_act = "gelu"'),
        ({"attention_bias": True}, "attention_bias = true"),
        (
            {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
            'rope_type = "llama3"',
        ),
        ({"use_sliding_window": True}, "use_sliding_window = true"),
    ],
)
def test_unsupported_options_name_field_and_value(folder, tmp_path, changes, message) -> None:
    path, _, _ = folder
    bad = _edit_config(path, tmp_path / "bad", **changes)
    with pytest.raises(HFModelError, match="unsupported") as err:
        load_model(bad)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_files_and_hub_ids(folder, tmp_path: Path) -> None:
    path, _, _ = folder
    no_weights = tmp_path / "nw"
    shutil.copytree(path, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(HFModelError, match=r"missing model\.safetensors"):
        load_model(no_weights)
    with pytest.raises(HFModelError, match=r"missing config\.json"):
        import_hf(tmp_path)
    with pytest.raises(ModelFileError, match=r"hub id.*never downloads"):
        load_model("Qwen/Qwen3-0.6B")
    truncated = tmp_path / "tr"
    shutil.copytree(path, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(HFModelError, match="outside the file"):
        load_model(truncated)


def test_sharded_and_bf16_folders_load(tmp_path: Path) -> None:
    import copy

    model = build_model("qwen3", seed=5)
    with torch.no_grad():  # weights exactly representable in bf16: the fp32 model is the oracle
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    bf16.save_pretrained(tmp_path / "s", max_shard_size="20KB")
    assert (tmp_path / "s" / "model.safetensors.index.json").is_file()
    params = import_hf(tmp_path / "s").params
    ours, _, _ = forward(params, TOKENS[None], dtype=np.float64)
    ref = hf_logits(model, TOKENS)
    np.testing.assert_allclose(ours[0], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/{abs}/outside.safetensors"])
def test_an_index_naming_a_shard_outside_its_folder_is_refused(tmp_path: Path, shard) -> None:
    """The shard really exists (a valid safetensors file), but outside the folder: refused."""
    path, _, _ = save_folder(tmp_path / "m", "qwen3")
    shutil.copy(path / "model.safetensors", tmp_path / "outside.safetensors")
    (path / "model.safetensors").unlink()
    shard = shard.format(abs=str(tmp_path).strip("/"))
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": shard}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HFModelError, match="outside"):
        import_hf(path)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_keys_config_json_omits_take_transformers_defaults(kind: str, tmp_path: Path) -> None:
    """A config.json without head_dim / tie_word_embeddings means what transformers reads
    into it: Qwen3Config's head_dim is 128 (not hidden/heads) and neither class ties."""
    head_dim = 128 if kind == "qwen3" else 16  # LlamaConfig: hidden_size // heads
    path, _, _ = save_folder(tmp_path / kind, kind, head_dim=head_dim, tie_word_embeddings=False)
    cfg = json.loads((path / "config.json").read_text())
    del cfg["head_dim"], cfg["tie_word_embeddings"]
    (path / "config.json").write_text(json.dumps(cfg))
    model = transformers.AutoModelForCausalLM.from_pretrained(path).float().eval()
    assert model.config.head_dim == head_dim and not model.config.tie_word_embeddings
    h = import_hf(path)
    assert h.config.head_dim == head_dim and not h.config.tied_embeddings
    tokens = np.array([3, 17, 42, 99, 7])
    ours, _, _ = forward(h.params, tokens[None], dtype=np.float64)
    ref = hf_logits(model, tokens)
    assert np.abs(ours[0] - ref).max() <= 1e-4 * np.abs(ref).max()
