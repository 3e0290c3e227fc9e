"""Mutation fuzzing of the MIL parser/validator/simulator and the MILBlob and checkpoint readers.

Each ``fuzz_*`` function mutates valid inputs ``cases`` times from a seeded generator and
feeds them to the reader; an input ends in one of three ways: accepted, refused with one of
the project's typed errors (:class:`AnetrainError`) or *escaped* with any other exception (a
bug). The returned :class:`Tally` counts them and keeps the first escapes to reproduce.
The fast variants run in the test suite; ``scripts/fuzz.py`` runs the long ones.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anetrain.errors import AnetrainError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "mil"


@dataclass
class Tally:
    tried: int = 0
    accepted: int = 0
    refused: int = 0  # a typed error: the clear outcome for bad input
    escapes: list[tuple[str, str]] = field(default_factory=list)  # (input repr, traceback)

    @property
    def escaped(self) -> int:
        return len(self.escapes)

    def record(self, sample: object, run: Callable[[], object]) -> None:
        self.tried += 1
        try:
            run()
        except AnetrainError:
            self.refused += 1
        except Exception:
            self.escapes.append((repr(sample)[:2000], traceback.format_exc(limit=6)))
        else:
            self.accepted += 1

    def summary(self) -> str:
        return (
            f"{self.tried} tried: {self.accepted} accepted, {self.refused} typed errors, "
            f"{self.escaped} escaped"
        )


# ---- MIL text ---------------------------------------------------------------------------

HOSTILE_TOKENS = [
    "9" * 5000,  # past Python's int-from-string digit limit
    "1" + "0" * 400,
    "0x.p1",  # hex float without digits
    "0xp1",
    "0x1p99999",  # hex float out of range
    "-0x1.8p-99999",
    "1e99999",
    "-1e-99999",
    "nan",
    "-inf",
    "0",
    "-1",
    "2147483648",
    "[" * 3000 + "1" + "]" * 3000,  # deep nesting
    "(" * 3000,
    "tensor<fp16, [0]>",  # zero-size dimension
    "tensor<fp16, [1, 0, 1, 4]>",
    "tensor<fp16, [4000000000, 4000000000]>",
    "tensor<int32, [2]>([1, 2])",  # a tensor where a scalar belongs
    "tensor<fp32, [2, 2]>([1.0, 2.0, 3.0, 4.0])",
    'string("x")',
    "bool(true)",
    "int32(1)",
    "fp16(0x1p-24)",
    "uint64(18446744073709551615)",
    'BLOBFILE(path = string("@model_path/weights/w.bin"), offset = uint64(64))',
    "bogus_attr = int32(1)",
    "name = int32(3)",
    "x",
    "é",
    "\x00",
    "}",
    "];",
    "->",
    "program(1.3)",
    "func",
]


def mil_seeds() -> list[tuple[str, Path]]:
    """The shipped example programs (text, weights folder) and the original's verbatim texts."""
    from seed_mil import FOOTER, HEADER, SEED_DYN_MATMUL, SEED_EXAMPLE_A, SEED_EXAMPLE_B

    seeds = [(p.read_text(), p.parent) for p in sorted(EXAMPLES.glob("*/*.mil"))]
    for body in (SEED_DYN_MATMUL, SEED_EXAMPLE_A, SEED_EXAMPLE_B):
        seeds.append((HEADER + body + FOOTER, EXAMPLES))
    return seeds


def _tokens(text: str) -> list[str]:
    import re

    return re.findall(r"\s+|[A-Za-z_0-9.+-]+|\"[^\"]*\"|.", text)


def mutate_text(text: str, rng: random.Random) -> str:
    """One to three random edits: delete/duplicate/swap spans, replace a token by a hostile one
    or by another token of the program, or change a number."""
    parts = _tokens(text)
    for _ in range(rng.randint(1, 3)):
        if not parts:
            break
        i = rng.randrange(len(parts))
        kind = rng.randrange(9)
        if kind == 0:
            del parts[i : i + rng.randint(1, 8)]
        elif kind == 1:
            parts[i:i] = parts[i : i + rng.randint(1, 12)]
        elif kind == 2:
            j = rng.randrange(len(parts))
            parts[i], parts[j] = parts[j], parts[i]
        elif kind in (3, 4):
            parts[i] = rng.choice(HOSTILE_TOKENS)
        elif kind == 5:
            parts[i] = rng.choice(parts)
        elif kind in (6, 7):  # same-class swap: another name, or another number, of the program
            word = parts[i]
            same = [p for p in parts if p[:1].isdigit() == word[:1].isdigit() and p.strip()]
            if word.strip() and same:
                parts[i] = rng.choice(same)
        else:
            numbers = [k for k, p in enumerate(parts) if p[:1].isdigit()]
            if numbers:
                k = rng.choice(numbers)
                parts[k] = rng.choice(["0", "1", "3", "-1", "65536", "2147483647", "1.5"])
    return "".join(parts)


def check_mil_text(text: str, weights: Path, *, simulate: bool = True) -> None:
    """Parse, validate and (when the program is valid and small) compile and run it on sim:
    every refusal along the way must be typed."""
    from anetrain.errors import MILTypeError
    from anetrain.mil import parse_program
    from anetrain.mil.validate import directory_blob_opener, validate_program
    from anetrain.runtime import compile as compile_kernel

    program = parse_program(text)
    issues = validate_program(program, directory_blob_opener(weights))
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise MILTypeError(errors[0].message, line=errors[0].line, col=errors[0].col)
    values = sum(v.type.nbytes for op in program.main.operations for v in op.outputs)
    if not simulate or values > 32 * 2**20:  # keep each case fast
        return
    blobs = {}
    for path in sorted({lit.blob.path for op in program.main.operations
                        for lit in op.attributes.values() if lit.blob is not None}):  # fmt: skip
        local = weights / path.removeprefix("@model_path/")
        if local.is_file():
            blobs[path] = local.read_bytes()
    kernel = compile_kernel(program, blobs, backend="sim")
    try:
        arrays = [np.ones(v.type.shape, np.float32) for v in program.main.inputs]
        kernel(*arrays)
    finally:
        kernel.unload()


def fuzz_mil(cases: int, seed: int = 0, *, simulate: bool = True) -> Tally:
    rng = random.Random(seed)
    seeds = mil_seeds()
    tally = Tally()
    for _ in range(cases):
        text, weights = rng.choice(seeds)
        mutated = mutate_text(text, rng)
        tally.record(mutated, lambda m=mutated, w=weights: check_mil_text(m, w, simulate=simulate))
    return tally


# ---- bytes (MILBlob, checkpoints) ---------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Flip, overwrite, truncate, extend or splice: the damage a disk or a bad copy does."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        i = rng.randrange(max(len(buf), 1))
        if kind == 0 and buf:
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:
            buf[i : i + 8] = rng.randbytes(min(8, len(buf) - i))
        elif kind == 2:
            del buf[i:]
        elif kind == 3:
            buf += rng.randbytes(rng.randint(1, 64))
        elif kind == 4 and buf:  # an 8-byte little-endian field set to an extreme value
            value = rng.choice([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1])
            buf[i : i + 8] = value.to_bytes(8, "little")[: len(buf) - i]
        else:
            del buf[i : i + rng.randint(1, 32)]
    return bytes(buf)


def fuzz_blob(cases: int, seed: int = 0) -> Tally:
    from anetrain.mil.blob import read_blob_file

    originals = [p.read_bytes() for p in sorted(EXAMPLES.glob("*/weights/*.bin"))]
    rng = random.Random(seed)
    tally = Tally()

    def read(data: bytes) -> None:
        blob = read_blob_file(data)
        for offset in blob.offsets:
            blob.read_raw(offset)
            if blob.entry(offset).dtype.supported:
                blob.read(offset)

    for _ in range(cases):
        data = mutate_bytes(rng.choice(originals), rng)
        tally.record(data[:64], lambda d=data: read(d))
    return tally


def fuzz_checkpoint(cases: int, tmp: Path, seed: int = 0) -> Tally:
    from anetrain.model.config import ModelConfig
    from anetrain.model.params import init_params
    from anetrain.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    config = ModelConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, vocab_size=64, seq_len=8)
    params = init_params(config, 0)
    good = tmp / "good.safetensors"
    save_checkpoint(good, Checkpoint(config, params, step=3, adam_m=params, adam_v=params))
    original = good.read_bytes()
    rng = random.Random(seed)
    tally = Tally()
    path = tmp / "mutated.safetensors"
    for _ in range(cases):
        data = mutate_bytes(original, rng)
        path.write_bytes(data)
        tally.record(data[:64], lambda: load_checkpoint(path, expect=config))
    return tally
