"""Sampling and autoregressive generation on the NumPy reference (KV-cache decode).

Prompt prefill runs through the batched forward, then one :func:`forward_step` per new token,
as in maderix's dashboard ``generate_text`` and llama2.c ``run.c``.
Timing (tokens/s) is the caller's job. Not a serving engine: batch 1, fp32, CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from anetrain.model.config import ModelConfig
from anetrain.model.params import Params
from anetrain.model.reference import KVCache, forward_step, prefill


def sample_logits(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> int:
    """Draw one token id from logits [V].

    ``temperature <= 0`` is greedy (argmax). ``top_k`` keeps the k most likely tokens, ``top_p``
    the smallest set whose probability mass reaches p (always at least the top token); both may
    be combined (top-k first). Ties in the cut-off keep the lower token ids.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 1 or logits.size == 0:
        raise ValueError(f"logits must be a non-empty 1-D array, got shape {logits.shape}")
    if temperature <= 0:
        return int(np.argmax(logits))
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    order = np.argsort(-logits, kind="stable")  # [V] most likely first
    z = logits[order] / temperature
    if top_k is not None:
        z = z[:top_k]
    probs = np.exp(z - z[0])
    probs /= probs.sum()
    if top_p is not None and top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1  # first index reaching p
        probs = probs[: min(keep, probs.size)]
        probs /= probs.sum()
    u = rng.random()
    idx = min(int(np.searchsorted(np.cumsum(probs), u, side="right")), probs.size - 1)
    return int(order[idx])


def generate(
    params: Params,
    config: ModelConfig,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    on_token: Callable[[int], None] | None = None,
    stop_ids: Iterable[int] = (),
    allowed_ids: Sequence[int] | None = None,
    prefill_fn: Callable[[Params, np.ndarray, KVCache], np.ndarray] = prefill,
    timings: dict[str, float] | None = None,
) -> list[int]:
    """New token ids after ``prompt_ids`` (the prompt is not included).

    Stops after ``max_new_tokens``, at a token in ``stop_ids`` (included in the result), or when
    prompt + output reach ``config.seq_len`` tokens (as llama2.c caps ``steps``; raise it with
    ``config.replace(seq_len=...)``). ``config`` must match the params' architecture.
    ``on_token(id)`` is called as each token is produced (for streaming output).
    ``allowed_ids`` restricts sampling to those ids: a model trained with a compacted
    vocabulary never learned to push the other logits down. ``prefill_fn`` fills the KV cache
    for the prompt (e.g. through the ANE kernels, :mod:`anetrain.train.prefill`); ``timings``
    receives ``prefill_s`` and ``decode_s``.
    """
    if config.arch_hash() != params.config.arch_hash():
        raise ValueError(f"config does not match params: {params.config.diff(config)}")
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("prompt_ids must hold at least one token (e.g. BOS)")
    if len(prompt) >= config.seq_len:
        raise ValueError(
            f"prompt of {len(prompt)} tokens leaves no room in seq_len {config.seq_len}"
        )
    stops = set(stop_ids)
    rng = np.random.default_rng(seed)
    kv = KVCache.empty(config, config.seq_len, dtype=params.dtype)
    start = time.perf_counter()
    logits = prefill_fn(params, np.array(prompt, dtype=np.int64), kv)  # [V]
    prefilled = time.perf_counter()
    out: list[int] = []
    pos = len(prompt)
    banned = None
    if allowed_ids is not None:
        banned = np.ones(config.vocab_size, dtype=bool)
        banned[np.asarray(allowed_ids, dtype=np.int64)] = False
    while len(out) < max_new_tokens:
        if banned is not None:
            logits = np.where(banned, -np.inf, logits)
        tok = sample_logits(logits, rng, temperature, top_k, top_p)
        out.append(tok)
        if on_token is not None:
            on_token(tok)
        if tok in stops or pos + 1 >= config.seq_len:  # sequence is now pos + 1 long
            break
        logits = forward_step(params, tok, pos, kv)
        pos += 1
    if timings is not None:
        timings["prefill_s"] = prefilled - start
        timings["decode_s"] = time.perf_counter() - prefilled
    return out
