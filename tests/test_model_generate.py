"""Sampling (temperature, top-k, top-p) and KV-cache generation."""

from __future__ import annotations

import numpy as np
import pytest

from anetrain.model import ModelConfig, init_params
from anetrain.model.generate import generate, sample_logits
from anetrain.model.reference import forward

CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, vocab_size=23)
LOGITS = np.log(np.array([0.05, 0.4, 0.3, 0.15, 0.1]))  # argmax = 1


def draws(n: int = 4000, **kw) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.array([sample_logits(LOGITS, rng, **kw) for _ in range(n)])


def test_greedy_cases_are_argmax() -> None:
    assert set(draws(200, temperature=0.0)) == {1}
    assert set(draws(200, temperature=5.0, top_k=1)) == {1}
    assert set(draws(200, temperature=5.0, top_p=1e-9)) == {1}


def test_top_k_and_top_p_restrict_support() -> None:
    assert set(draws(top_k=2)) == {1, 2}
    # top_p=0.65: 0.4 < 0.65 <= 0.4 + 0.3, so the nucleus is {1, 2}
    d = draws(top_p=0.65)
    assert set(d) == {1, 2}
    assert np.mean(d == 1) == pytest.approx(0.4 / 0.7, abs=0.03)
    assert set(draws(top_p=0.9)) == {1, 2, 3, 4}
    assert set(draws(top_k=3, top_p=0.99)) == {1, 2, 3}


def test_temperature_one_matches_distribution() -> None:
    d = draws(20000)
    freq = np.bincount(d, minlength=5) / d.size
    np.testing.assert_allclose(freq, np.exp(LOGITS), atol=0.01)


def test_sampling_argument_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="top_k"):
        sample_logits(LOGITS, rng, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample_logits(LOGITS, rng, top_p=1.5)


def test_generate_seeded_and_streams() -> None:
    p = init_params(CFG, seed=0)
    p.flat *= 20  # sharper distributions than the tiny init gives
    seen: list[int] = []
    a = generate(p, CFG, [1, 2, 3], 12, temperature=1.0, top_k=5, seed=7, on_token=seen.append)
    assert a == seen and len(a) == 12
    assert a == generate(p, CFG, [1, 2, 3], 12, temperature=1.0, top_k=5, seed=7)
    others = [generate(p, CFG, [1, 2, 3], 12, temperature=1.0, seed=s) for s in range(1, 4)]
    assert any(o != a for o in others)


def test_greedy_generate_matches_full_forward_argmax() -> None:
    p = init_params(CFG, seed=1)
    p.flat *= 20
    prompt = [3, 4]
    out = generate(p, CFG, prompt, 8, temperature=0.0)
    seq = list(prompt)
    for _ in range(8):
        logits, _, _ = forward(p, np.array([seq]))
        seq.append(int(np.argmax(logits[0, -1])))
    assert out == seq[len(prompt) :]


def test_generate_stops_at_stop_id_and_seq_len() -> None:
    p = init_params(CFG, seed=1)
    p.flat *= 20
    free = generate(p, CFG, [3], 6, temperature=0.0)
    stopped = generate(p, CFG, [3], 6, temperature=0.0, stop_ids=[free[2]])
    assert stopped == free[: free.index(free[2]) + 1]
    short = CFG.replace(seq_len=5)
    assert len(generate(p, short, [3, 4], 100, temperature=0.0)) == 3  # total 5 = seq_len
    with pytest.raises(ValueError, match="no room"):
        generate(p, short, [1, 2, 3, 4, 5], 3)
    with pytest.raises(ValueError, match="does not match"):
        generate(p, CFG.replace(dim=64, head_dim=16), [1], 3)
    with pytest.raises(ValueError, match="at least one token"):
        generate(p, CFG, [], 3)


def test_allowed_ids_restrict_every_sampled_token() -> None:
    cfg = ModelConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, vocab_size=40, seq_len=32)
    params = init_params(cfg, seed=0)
    allowed = [3, 17, 29]
    out = generate(params, cfg, [1], 20, temperature=1.5, seed=4, allowed_ids=allowed)
    assert len(out) == 20 and set(out) <= set(allowed)
