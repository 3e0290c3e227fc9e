"""FLOP and byte accounting of the benchmark programs, and the table formulas."""

from __future__ import annotations

import pytest

from anetrain.bench import configs
from anetrain.kernels import probes
from anetrain.perfmodel import program_cost
from anetrain.perfmodel.reference import load_reference, reference_rows

MIB = 1 << 20
SMALL_CONSTS = 16 + 8 + 8  # the inline pad/strides/dilations int32 tensors of every conv program


def _signature(program: object) -> list[tuple[object, ...]]:
    cost = program_cost(program)  # type: ignore[arg-type]
    return [(o.op_type, o.flops, o.weight_bytes, o.act_bytes, o.io_bytes, o.int8) for o in cost.ops]


@pytest.mark.parametrize(("ch", "sp", "depth"), [(64, 16, 3), (32, 8, 1)])
def test_conv_chain_flops_and_bytes(ch: int, sp: int, depth: int) -> None:
    cost = program_cost(probes.conv_chain(ch, sp, depth).program)
    assert cost.flops == 2 * ch * ch * sp * depth
    assert cost.flops / 1e9 == pytest.approx(configs.gflop(ch, sp, depth))
    assert [o.op_type for o in cost.ops] == ["conv"] * depth
    assert all(o.weight_bytes == ch * ch * 2 + SMALL_CONSTS for o in cost.ops)
    assert cost.weight_bytes - SMALL_CONSTS == ch * ch * 2 * depth
    assert (cost.weight_bytes - SMALL_CONSTS) / MIB == pytest.approx(configs.weight_mb(ch, depth))
    assert cost.input_bytes == cost.output_bytes == ch * sp * 2
    # the first conv reads the input surface, the last writes the output surface
    assert cost.ops[0].io_bytes == ch * sp * 2 * (2 if depth == 1 else 1)


def test_single_conv_fp32_io_goes_through_casts() -> None:
    ch, sp = 64, 16
    cost = program_cost(probes.single_conv(ch, sp).program)
    assert [o.op_type for o in cost.ops] == ["cast", "conv", "cast"]
    cast_in, conv, cast_out = cost.ops
    assert cast_in.io_bytes == ch * sp * 4 and cast_in.act_bytes == ch * sp * 2
    assert conv.io_bytes == 0 and conv.act_bytes == 2 * ch * sp * 2
    assert cast_out.io_bytes == ch * sp * 4
    assert cost.flops == 2 * ch * ch * sp


def test_int8_chain_counts_int8_weights_and_fuses_quantization() -> None:
    ch, sp, depth = 32, 4, 3
    cost = program_cost(probes.int8_chain(ch, sp, depth).program)
    assert [o.op_type for o in cost.ops] == ["conv"] * depth  # quantize/dequantize fused
    assert all(o.int8 for o in cost.ops)
    assert all(o.weight_bytes == ch * ch + SMALL_CONSTS for o in cost.ops)
    assert cost.flops / 1e9 == pytest.approx(configs.gop_spatial(ch, sp, depth))
    assert configs.weight_mb(ch, depth, bytes_per_weight=1) == ch * ch * depth / MIB


@pytest.mark.parametrize(
    ("skeleton", "real"),
    [
        (
            lambda: probes.single_conv(48, 16, data=False).program,
            lambda: probes.single_conv(48, 16),
        ),
        (
            lambda: probes.conv_chain(32, 8, 4, data=False).program,
            lambda: probes.conv_chain(32, 8, 4),
        ),
        (
            lambda: probes.int8_chain(32, 4, 3, data=False).program,
            lambda: probes.int8_chain(32, 4, 3),
        ),
    ],
)
def test_weight_free_probes_match_the_real_ones(skeleton, real) -> None:  # type: ignore[no-untyped-def]
    assert _signature(skeleton()) == _signature(real().program)


def test_spatial_chain_equals_flat_chain_in_cost() -> None:
    """The int8 bench's FP16 rows run [1,ch,1,sp*sp] for the original's [1,ch,sp,sp]."""
    assert _signature(probes.conv_chain(32, 8, 2, height=8, data=False).program) == _signature(
        probes.conv_chain(32, 64, 2, data=False).program
    )


def test_formulas_match_the_reference_tables() -> None:
    doc = load_reference()
    sec = doc["peak_conv_chain"]
    for depth, ch, sp, w_mb, gf, ms, tf in sec["rows"]:
        assert configs.weight_mb(ch, depth) == pytest.approx(w_mb, abs=0.05)
        assert configs.gflop(ch, sp, depth) == pytest.approx(gf, abs=0.006)
        assert configs.tflops(gf, ms) == pytest.approx(tf, abs=0.02)
    for ch, sp, _w, act, tot, _ms, _tf in doc["sram_coarse_probe"]["rows"]:
        assert configs.act_mb(ch, sp) == pytest.approx(act, abs=0.006)
        assert configs.weight_mb(ch) + 2 * configs.act_mb(ch, sp) == pytest.approx(tot, abs=0.06)
    assert configs.gop_spatial(512, 64, 128) == pytest.approx(274.88, abs=0.01)


def test_reference_rows_cover_every_timed_row() -> None:
    rows = reference_rows()
    assert len(rows) == 10 + 6 + 9 + 2 * 2 + 10 + 6
    assert {r.group for r in rows} == {
        "peak_conv_chain", "single_conv_inmem", "sram_coarse_probe", "int8_w8a8_m4",
        "m4_peak_conv_chain", "m4_single_conv_inmem",
    }  # fmt: skip
    assert {r.chip for r in rows if r.group.startswith(("m4_", "int8"))} == {"m4"}
    assert len(reference_rows(community=False)) == 29
    chain = next(r for r in rows if r.label == "128x conv 512ch sp64")
    assert chain.cost.flops == 2 * 512 * 512 * 64 * 128


def test_config_lists_are_the_originals() -> None:
    assert len(configs.PEAK_CONFIGS) == 10
    assert [c for c, _ in configs.INMEM_CONFIGS] == [256, 512, 1024, 2048, 3072, 4096]
    assert len(configs.SRAM_CONFIGS) == 9 and configs.SRAM_CONFIGS[-1] == (8192, 32)
    assert len(configs.SRAM_FINE_CONFIGS) == 13 and configs.SRAM_FINE_CONFIGS[-1] == (8192, 32)
    assert len(configs.INT8_CONFIGS) == 5
    assert configs.QOS_VALUES == (0, 1, 5, 10, 15, 17, 19, 21, 25, 31, 33, 40, 47, 50, 55, 60, 63)
