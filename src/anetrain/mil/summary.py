"""A one-screen human summary of a program: signature, op counts, weights, FLOPs."""

from __future__ import annotations

from pathlib import Path

from anetrain.mil.analysis import program_stats
from anetrain.mil.ir import Program


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def human_count(n: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def format_summary(path: Path | str, program: Program) -> str:
    fn = program.main
    stats = program_stats(program)
    lines = [f"{path}: OK  program({program.version}), func {fn.name}<{fn.opset}>"]
    width = max([len(v.name) for v in (*fn.inputs, *fn.outputs)] + [4])
    for label, items in (("inputs", fn.inputs), ("outputs", fn.outputs)):
        for i, var in enumerate(items):
            head = f"{label}:" if i == 0 else ""
            lines.append(
                f"  {head:<9}{var.name:<{width}}  {var.type}  ({human_bytes(var.type.nbytes)})"
            )
    total = sum(stats.op_counts.values())
    counts = ", ".join(f"{k} {v}" for k, v in stats.op_counts.most_common())
    lines.append(f"  {'ops:':<9}{total} ({counts})")
    refs = fn.blob_refs()
    files = sorted({r.file_name for r in refs})
    lines.append(
        f"  {'weights:':<9}{human_bytes(stats.weight_bytes)} in {len(refs)} BLOBFILE "
        f"reference(s) across {len(files)} file(s)"
        + (f" [{', '.join(files)}]" if files else "")
        + f"; inline constants {human_bytes(stats.inline_const_bytes)}"
    )
    by_op = ", ".join(f"{k} {human_count(v)}" for k, v in stats.flops_by_op.most_common() if v)
    lines.append(
        f"  {'FLOPs:':<9}{human_count(stats.flops, 'FLOP')}" + (f" ({by_op})" if by_op else "")
    )
    lines.append(
        f"  {'I/O:':<9}{human_bytes(stats.input_bytes)} in, {human_bytes(stats.output_bytes)} out"
    )
    return "\n".join(lines)
