"""``anetrain generate``: sample text from a checkpoint, streamed token by token.

Reads every format :mod:`anetrain.model.loader` knows: anetrain checkpoints (a ``.safetensors``
file or a run folder), Hugging Face Llama/Qwen3 folders, llama2.c model files and maderix BLZT
checkpoints. Text goes to stdout as it is
produced; the model summary, the prompt prefill time and the decode tokens/s go to stderr.
``--prefill kernels`` runs the prompt through the dynamic ANE training kernels
(:mod:`anetrain.train.prefill`) instead of the NumPy forward; decoding stays NumPy.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from anetrain.commands.args import byte_size, file_or_folder, seed, tokenizer_arg
from anetrain.commands.chipargs import add_chip_options, resolve_chip
from anetrain.errors import AnetrainError


class GenerateError(AnetrainError):
    """Generation cannot start: bad arguments, no usable tokenizer, or a prompt that won't fit."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint or model file",
        description="Sample text from an anetrain checkpoint (a .safetensors file, or a run "
        "folder: its best checkpoint, else its last), a local Hugging Face Llama/Qwen3 folder, "
        "a llama2.c model .bin, or a maderix BLZT checkpoint. Text streams to stdout; the "
        "prefill time and decode tokens/s go to stderr.",
    )
    p.add_argument(
        "--ckpt",
        type=file_or_folder,
        required=True,
        metavar="PATH",
        help="checkpoint file, run folder, Hugging Face model folder, llama2.c .bin or BLZT "
        "checkpoint",
    )
    p.add_argument(
        "--prompt", default="", metavar="TEXT", help="text to continue (default: start a new story)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        default=256,
        help="new tokens to generate (default 256; capped by the model's seq_len)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        metavar="T",
        help="0 = greedy (default 0.8)",
    )
    p.add_argument(
        "--top-k", type=int, metavar="K", help="sample from the k most likely tokens only"
    )
    p.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="sample from the smallest set with this probability mass",
    )
    p.add_argument(
        "--seed",
        type=seed,
        metavar="S",
        help="sampling seed (default: random, reported at the end)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="T",
        type=tokenizer_arg,
        help="tokenizer.bin path, a tokenizer.json or its folder, or 'builtin' (default: the "
        "run folder's config.json or the model folder's tokenizer.json; required for llama2.c "
        "and BLZT files)",
    )
    p.add_argument(
        "--prefill",
        choices=["numpy", "kernels"],
        default="numpy",
        help="run the prompt through the NumPy forward (default) or the dynamic ANE training "
        "kernels (pads the prompt to seq_len); decoding is NumPy either way",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "sim", "ane"],
        help="--prefill kernels: auto (default; ane when available, else sim), sim or ane",
    )
    add_chip_options(p, "--prefill kernels: chip profile for sim (e.g. m4, m1max)")
    p.add_argument(
        "--max-memory",
        type=byte_size,
        metavar="SIZE",
        help="refuse to load a model whose estimated memory exceeds SIZE (e.g. 8G); "
        "default: the machine's available memory",
    )
    p.set_defaults(handler=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_tokens < 1:
        raise GenerateError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise GenerateError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise GenerateError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise GenerateError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.prefill != "kernels" and (args.backend is not None or args.chip is not None):
        raise GenerateError("--backend and --chip only apply to --prefill kernels")


class _Stream:
    """Writes decoded text to a stream as tokens arrive (the tokenizer's incremental decoder
    holds back UTF-8 split across tokens until it is complete)."""

    def __init__(self, tok: Any, out: Any) -> None:
        self.decoder = tok.stream()
        self.out = out

    def write(self, token: int) -> None:
        text = self.decoder.step(token)
        if text:
            self.out.write(text)
            self.out.flush()

    def close(self) -> None:
        self.out.write(self.decoder.finish() + "\n")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    from anetrain.data.corpus import check_tokenizer, load_tokenizer
    from anetrain.memory import check_model_load
    from anetrain.model.generate import generate
    from anetrain.model.loader import load_model
    from anetrain.model.reference import prefill as numpy_prefill

    _check_args(args)
    check_model_load(args.ckpt, args.max_memory)
    model = load_model(args.ckpt, find_tokenizer=args.tokenizer is None)
    import numpy as np

    if not np.isfinite(model.params.flat).all():
        raise GenerateError(
            f"{model.path}: the weights hold NaN or infinity (a diverged run saved them); "
            "sample from an earlier checkpoint"
        )
    cfg = model.config
    spec = args.tokenizer or model.tokenizer
    if spec is None:
        if model.kind == "anetrain":
            hint = "no run folder config.json names one"
        else:
            hint = f"a {model.description} does not include one"
        raise GenerateError(
            f"{model.path}: no tokenizer ({hint}); pass --tokenizer PATH (a llama2.c "
            "tokenizer.bin, a tokenizer.json or its folder) or --tokenizer builtin"
        )
    tok = load_tokenizer(spec)
    check_tokenizer(tok, cfg.vocab_size)
    prompt = tok.encode(args.prompt, bos=True, eos=False)
    if not prompt:
        raise GenerateError(
            f"{tok.source}: the prompt encodes to no tokens and this tokenizer adds no BOS; "
            "pass a non-empty --prompt"
        )
    if max(prompt) >= cfg.vocab_size:
        raise GenerateError(
            f"--prompt encodes to token id {max(prompt)}, outside the model's vocab_size "
            f"{cfg.vocab_size}; use the tokenizer the model was trained with"
        )
    # A Hugging Face model's context is its max_position_embeddings, not the training window
    # it was imported with; the NumPy decoder sizes its KV cache to what this run needs.
    context = int((model.hf_config or {}).get("max_position_embeddings") or 0)
    if args.prefill == "numpy" and context > cfg.seq_len:
        cfg = cfg.replace(seq_len=max(cfg.seq_len, min(context, len(prompt) + args.max_tokens)))
    if len(prompt) >= cfg.seq_len:
        raise GenerateError(
            f"--prompt is {len(prompt)} tokens (with BOS) but the model's seq_len is "
            f"{cfg.seq_len}; shorten it to at most {cfg.seq_len - 1} tokens including BOS"
        )
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    kernels = _kernel_prefill(args, cfg) if args.prefill == "kernels" else None
    step = f", step {model.step}" if model.step is not None else ""
    print(
        f"anetrain generate: {model.path} ({model.description}{step}; "
        f"{cfg.n_params / 1e6:.2f}M params, seq_len {cfg.seq_len}); tokenizer {spec}",
        file=sys.stderr,
    )
    for note in model.notes:
        print(f"note: {note}", file=sys.stderr)
    if kernels is not None:
        be = kernels.pipeline.backend
        print(
            f"prefill: kernels on {be.name} ({be.chip.name}), window {kernels.seq_len}; "
            f"compiled {len(kernels.pipeline.kernels)} kernels in {kernels.compile_s:.2f} s",
            file=sys.stderr,
        )

    stops = tok.stop_ids
    stream = _Stream(tok, sys.stdout)
    for t in prompt:
        stream.write(t)
    try:
        timings: dict[str, float] = {}
        new = generate(
            model.params,
            cfg,
            prompt,
            min(args.max_tokens, cfg.seq_len - len(prompt)),
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=seed,
            on_token=stream.write,
            stop_ids=stops,
            allowed_ids=model.vocab_ids,
            prefill_fn=numpy_prefill if kernels is None else kernels,
            timings=timings,
        )
    finally:
        if kernels is not None:
            kernels.close()
    stream.close()
    elapsed = timings["decode_s"]
    print(
        f"prefill: {len(prompt)} prompt tokens in {timings['prefill_s']:.3f} s ({args.prefill})",
        file=sys.stderr,
    )
    print(
        f"{len(new)} tokens in {elapsed:.2f} s ({len(new) / max(elapsed, 1e-9):,.1f} tokens/s, "
        f"seed {seed})",
        file=sys.stderr,
    )
    return 0


def _kernel_prefill(args: argparse.Namespace, cfg: Any) -> Any:
    """The dynamic pipeline's kernels compiled for the prompt prefill (a KernelPrefill); a
    backend that is unavailable or rejects the programs fails here, before any output."""
    from anetrain.train.prefill import KernelPrefill

    return KernelPrefill(cfg, backend=args.backend or "auto", chip=resolve_chip(args))
