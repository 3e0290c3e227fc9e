"""``anetrain generate``: sample text from a checkpoint, streamed token by token.

Reads anetrain checkpoints (a ``.safetensors`` file or a run folder), llama2.c model files and
maderix BLZT checkpoints, telling them apart by their magic bytes. Text goes to stdout as it is
produced; the model summary, the prompt prefill time and the decode tokens/s go to stderr.
``--prefill kernels`` runs the prompt through the dynamic ANE training kernels
(:mod:`anetrain.train.prefill`) instead of the NumPy forward; decoding stays NumPy.
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anetrain.commands.args import byte_size, seed
from anetrain.errors import AnetrainError
from anetrain.runfolder import CKPT_BEST as BEST
from anetrain.runfolder import CKPT_LAST as LAST
from anetrain.runfolder import CONFIG

KINDS = {
    "anetrain": "anetrain checkpoint",
    "llama2c": "llama2.c model",
    "original": "maderix BLZT checkpoint",
}


class GenerateError(AnetrainError):
    """Generation cannot start: bad arguments, no usable tokenizer, or a prompt that won't fit."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint or model file",
        description="Sample text from an anetrain checkpoint (a .safetensors file, or a run "
        "folder: its best checkpoint, else its last), a llama2.c model .bin, or a maderix BLZT "
        "checkpoint. Text streams to stdout; the prefill time and decode tokens/s go to stderr.",
    )
    p.add_argument(
        "--ckpt",
        type=Path,
        required=True,
        metavar="PATH",
        help="checkpoint file, run folder, llama2.c .bin or BLZT checkpoint",
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
        help="tokenizer.bin path or 'builtin' (default: the run folder's config.json; "
        "required for llama2.c and BLZT files)",
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
    p.add_argument("--chip", help="--prefill kernels: chip profile for sim (e.g. m4, m1max)")
    p.add_argument(
        "--max-memory",
        type=byte_size,
        metavar="SIZE",
        help="refuse to load a model whose estimated memory exceeds SIZE (e.g. 8G); "
        "default: the machine's available memory",
    )
    p.set_defaults(handler=run)


@dataclass
class LoadedModel:
    """A model ready to sample from, and where it came from."""

    path: Path  # the file actually read
    kind: str  # a key of KINDS
    config: Any  # ModelConfig
    params: Any  # Params
    tokenizer: str | None = None  # tokenizer spec recorded with the run, if any
    step: int | None = None
    notes: list[str] = field(default_factory=list)
    vocab_ids: list[int] | None = None  # the ids a compacted classifier was trained over


def detect_format(path: Path) -> str:
    """``"anetrain"`` (safetensors), ``"original"`` (BLZT magic) or ``"llama2c"``.

    llama2.c v0 files have no magic, so anything unrecognised is tried as llama2.c, whose reader
    checks the file size against its header exactly.
    """
    from anetrain.model.llama2c import MAGIC_V1
    from anetrain.model.original import MAGIC as BLZT

    if path.suffix == ".safetensors":
        return "anetrain"
    head = _head(path, 9)
    if head[:4] == struct.pack("<I", BLZT):
        return "original"
    if head[:4] == struct.pack("<I", MAGIC_V1):
        return "llama2c"
    # safetensors: u64 header length, then the JSON header's "{"
    size = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and size <= path.stat().st_size - 8:
        return "anetrain"
    return "llama2c"


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(n)


def load_model(
    ckpt: Path, find_tokenizer: bool = True, *, max_memory: int | None = None
) -> LoadedModel:
    """Load ``ckpt`` (file or run folder); errors are :class:`AnetrainError` subclasses.

    With ``find_tokenizer``, an anetrain checkpoint's run folder config.json is consulted for
    the tokenizer the run was trained with. Loading holds the file's bytes, the tensors parsed
    from them and the model's own buffer at once: three times the file size is refused up
    front when it exceeds ``max_memory`` or the machine's available memory.
    """
    from anetrain.memory import check_fits
    from anetrain.model._io import ModelFileError
    from anetrain.model.llama2c import MAGIC_V1, import_llama2c
    from anetrain.model.original import import_original_checkpoint
    from anetrain.train.checkpoint import CheckpointError, load_checkpoint

    run_dir: Path | None = None
    if ckpt.is_dir():
        run_dir = ckpt
        ckpt = next((ckpt / n for n in (BEST, LAST) if (ckpt / n).is_file()), ckpt / LAST)
        if not ckpt.is_file():
            raise CheckpointError(
                f"{run_dir}: no {BEST} or {LAST} in this run folder; train into it first "
                "or pass a checkpoint file"
            )
    elif not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no such checkpoint file or run folder")
    elif (ckpt.parent / CONFIG).is_file():
        run_dir = ckpt.parent
    check_fits(f"loading {ckpt}", 3 * ckpt.stat().st_size, max_memory, hint="use a smaller model")
    try:
        kind = detect_format(ckpt)
    except OSError as err:
        raise CheckpointError(f"{ckpt}: cannot read ({err.strerror or err})") from None
    if kind == "anetrain":
        c = load_checkpoint(ckpt)
        tokenizer = _run_tokenizer(run_dir) if run_dir is not None and find_tokenizer else None
        return LoadedModel(
            ckpt, kind, c.config, c.params, tokenizer, c.step, vocab_ids=c.extra.get("vocab_ids")
        )
    if kind == "original":
        o = import_original_checkpoint(ckpt)
        return LoadedModel(ckpt, kind, o.config, o.params, None, o.header["step"], o.notes)
    try:
        config, params = import_llama2c(ckpt)
    except ModelFileError as err:
        if _head(ckpt, 4) == struct.pack("<I", MAGIC_V1):
            raise
        raise ModelFileError(
            f"{err}; it has no anetrain, BLZT or llama2.c v1 magic either, so it is not a model "
            "file anetrain can read"
        ) from None
    return LoadedModel(ckpt, kind, config, params)


def _run_tokenizer(run_dir: Path) -> str | None:
    """The ``tokenizer`` a run folder's config.json records (None if absent or null)."""
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8")).get("tokenizer")
    except (OSError, ValueError, AttributeError) as err:
        raise GenerateError(f"{path}: unreadable run config ({err}); pass --tokenizer") from None
    if spec is None or spec == "builtin":
        return spec
    spec = str(spec)
    # A relative path was relative to where training ran; also try the run folder.
    if not Path(spec).is_absolute() and not Path(spec).exists() and (run_dir / spec).is_file():
        return str(run_dir / spec)
    return spec


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
    """Writes decoded pieces to a text stream as they arrive (UTF-8 split across byte tokens
    is held back until complete)."""

    def __init__(self, tok: Any, out: Any) -> None:
        self.tok = tok
        self.out = out
        self.prev = -1
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, token: int, skip: frozenset[int]) -> None:
        if token not in skip:
            text = self.decoder.decode(self.tok.decode_piece(self.prev, token))
            if text:
                self.out.write(text)
                self.out.flush()
        self.prev = token

    def close(self) -> None:
        self.out.write(self.decoder.decode(b"", final=True) + "\n")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    from anetrain.data.corpus import load_tokenizer
    from anetrain.data.tokenizer import BOS_ID, EOS_ID
    from anetrain.model.generate import generate
    from anetrain.model.reference import prefill as numpy_prefill

    _check_args(args)
    model = load_model(args.ckpt, find_tokenizer=args.tokenizer is None, max_memory=args.max_memory)
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
            hint = f"a {KINDS[model.kind]} does not include one"
        raise GenerateError(
            f"{model.path}: no tokenizer ({hint}); pass --tokenizer PATH (a llama2.c "
            "tokenizer.bin) or --tokenizer builtin"
        )
    tok = load_tokenizer(spec)
    if tok.vocab_size < cfg.vocab_size:
        raise GenerateError(
            f"{tok.source}: tokenizer has {tok.vocab_size} tokens but the model emits ids up to "
            f"{cfg.vocab_size - 1} (vocab_size {cfg.vocab_size}); pass the tokenizer the model "
            "was trained with"
        )
    prompt = tok.encode(args.prompt, bos=True, eos=False)
    if max(prompt) >= cfg.vocab_size:
        raise GenerateError(
            f"--prompt encodes to token id {max(prompt)}, outside the model's vocab_size "
            f"{cfg.vocab_size}; use the tokenizer the model was trained with"
        )
    if len(prompt) >= cfg.seq_len:
        raise GenerateError(
            f"--prompt is {len(prompt)} tokens (with BOS) but the model's seq_len is "
            f"{cfg.seq_len}; shorten it to at most {cfg.seq_len - 1} tokens including BOS"
        )
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    kernels = _kernel_prefill(args, cfg) if args.prefill == "kernels" else None
    step = f", step {model.step}" if model.step is not None else ""
    print(
        f"anetrain generate: {model.path} ({KINDS[model.kind]}{step}; "
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

    stops = frozenset((BOS_ID, EOS_ID))
    stream = _Stream(tok, sys.stdout)
    for t in prompt:
        stream.write(t, stops)
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
            on_token=lambda t: stream.write(t, stops),
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

    return KernelPrefill(cfg, backend=args.backend or "auto", chip=args.chip)
