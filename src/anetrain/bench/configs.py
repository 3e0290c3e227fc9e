"""The original programs' configurations and the arithmetic of their tables.

"TFLOPS" is GFLOP per ms (1e9 / 1e-3 = 1e12). W(MB) is fp16 weight bytes in MiB (int8 rows:
one byte per weight). %peak divides by the chip's rated fp16 TFLOPS (the original divided by
0.019 instead of 19 and printed values 1000x too large).
"""

from __future__ import annotations

MIB = 1 << 20
SPILL_GFLOPS_PER_MB = 100.0  # sram_probe marks rows below this as " <-- spilling?"

# (channels, spatial, depth)
PEAK_CONFIGS: tuple[tuple[int, int, int], ...] = (
    (512, 64, 32), (512, 64, 48), (512, 64, 64), (512, 64, 96), (512, 64, 128),
    (256, 64, 64), (256, 64, 128), (256, 64, 256),
    (384, 64, 64), (384, 64, 128),
)  # fmt: skip
# (channels, spatial)
INMEM_CONFIGS: tuple[tuple[int, int], ...] = tuple(
    (c, 64) for c in (256, 512, 1024, 2048, 3072, 4096)
)
SRAM_CONFIGS: tuple[tuple[int, int], ...] = (
    *((c, 64) for c in (256, 512, 1024, 2048, 3072, 4096, 5120, 6144)),
    (8192, 32),
)
SRAM_FINE_CONFIGS: tuple[tuple[int, int], ...] = (
    *((c, 64) for c in (256, 512, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 4608, 5120, 6144)),
    (8192, 32),
)
# (channels, spatial, depth) on a [1, ch, sp, sp] input
INT8_CONFIGS: tuple[tuple[int, int, int], ...] = (
    (512, 64, 128), (512, 64, 64), (256, 64, 256), (256, 64, 128), (384, 64, 128),
)  # fmt: skip
# (channels, spatial) of one fp16 1x1 conv, small to large
DISPATCH_CONFIGS: tuple[tuple[int, int], ...] = (
    (16, 16), (64, 64), (128, 64), (256, 64), (512, 64), (1024, 64), (2048, 64),
)  # fmt: skip
QOS_VALUES: tuple[int, ...] = (0, 1, 5, 10, 15, 17, 19, 21, 25, 31, 33, 40, 47, 50, 55, 60, 63)
QOS_KERNEL: tuple[int, int] = (256, 64)  # 256x256 conv, spatial 64


def weight_mb(ch: int, depth: int = 1, bytes_per_weight: int = 2) -> float:
    """``ch*ch*bytes*depth / MiB``: the W(MB) column."""
    return ch * ch * bytes_per_weight * depth / MIB


def act_mb(ch: int, sp: int) -> float:
    """``ch*sp*2 / MiB``: sram_bench's Act(MB), the fp16 activation size."""
    return ch * sp * 2 / MIB


def gflop(ch: int, sp: int, depth: int = 1) -> float:
    """``2*ch^2*sp*depth / 1e9`` for 1x1 convs over ``sp`` positions."""
    return 2.0 * ch * ch * sp * depth / 1e9


def gop_spatial(ch: int, sp: int, depth: int) -> float:
    """The int8 bench's GOP on a ``[1, ch, sp, sp]`` input: ``2*ch^2*sp^2*depth / 1e9``."""
    return gflop(ch, sp * sp, depth)


def tflops(gflop_per_eval: float, ms: float) -> float:
    """GFLOP per ms is TFLOPS."""
    return gflop_per_eval / ms if ms > 0 else 0.0


def pct_peak(tflops_value: float, peak_tflops: float) -> float:
    """Percent of the chip's rated fp16 peak."""
    return 100.0 * tflops_value / peak_tflops


def gflops_per_mb(tflops_value: float, w_mb: float) -> float:
    """sram_probe's efficiency: GFLOP/s delivered per MiB of weights."""
    return tflops_value * 1000.0 / w_mb


def spilling(index: int, efficiency: float) -> bool:
    """sram_probe's mark: every row after the first below 100 GFLOPS/MB."""
    return index > 0 and efficiency < SPILL_GFLOPS_PER_MB
