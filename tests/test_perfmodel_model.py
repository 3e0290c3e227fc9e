"""The model's mechanics: monotonic in work, on-chip residency up to the profile's SRAM, the
big-op feed, the floor, INT8, parameters checked, and modeled time asked of the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anetrain import perfmodel, runtime
from anetrain.hardware.chips import chip_names, get_chip
from anetrain.kernels import probes
from anetrain.perfmodel import PerfModelError, get_params, predict
from anetrain.perfmodel.costs import OpCost, ProgramCost
from anetrain.perfmodel.params import MIB, params_from_dict, read_params_file

M4MAX = get_params("m4max")
CHIPS = [get_params(name) for name in chip_names()]


def _cost(*ops: OpCost, weights: int = 0) -> ProgramCost:
    return ProgramCost(tuple(ops), weights, 0, 0)


def test_every_chip_has_parameters_and_only_the_measured_ones_are_calibrated() -> None:
    assert set(perfmodel.known_chips()) == set(chip_names())
    assert sorted(p.chip for p in CHIPS if p.calibrated) == ["m4", "m4max"]
    for p in CHIPS:
        assert p.dram_gbps <= p.memory_gbps and p.big_op_gbps <= p.sram_gbps and p.source
        assert p.sram_bytes == get_chip(p.chip).sram_bytes  # one SRAM figure: the profile's
        assert p.peak_tflops == p.rated_fp16_tflops


@pytest.mark.parametrize("params", CHIPS, ids=lambda p: p.chip)
def test_more_flops_or_bytes_never_faster(params: perfmodel.PerfParams) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        flops, w, a, io = (int(v) for v in rng.integers(0, 10**9, size=4))
        base = _cost(OpCost("x", "conv", flops, w, a, io), weights=w)
        more = _cost(OpCost("x", "conv", flops * 2 + 1, w, a, io), weights=w)
        assert predict(more, params).total_ns >= predict(base, params).total_ns
        more_bytes = _cost(OpCost("x", "conv", flops, w * 2 + 1, a * 2 + 1, io * 2 + 1), weights=w)
        assert predict(more_bytes, params).total_ns >= predict(base, params).total_ns


@pytest.mark.parametrize("params", CHIPS, ids=lambda p: p.chip)
def test_deeper_or_wider_programs_never_faster(params: perfmodel.PerfParams) -> None:
    times = [
        predict(probes.conv_chain(512, 64, d, data=False).program, params).total_ns
        for d in (8, 32, 64, 96, 128)
    ]
    assert times == sorted(times)
    times = [
        predict(probes.single_conv(c, 64, data=False).program, params).total_ns
        for c in (256, 2048, 4096, 8192)
    ]
    assert times == sorted(times)


def test_only_weights_beyond_the_sram_cross_dram() -> None:
    """A 64 MiB chain keeps 32 MiB on chip (the profile's SRAM) and streams the other 32."""
    chain = probes.conv_chain(512, 64, 128, data=False).program
    pred = predict(chain, M4MAX)
    io = 2 * 512 * 64 * 2
    assert pred.dram_bytes == pytest.approx(64 * MIB - get_chip("m4max").sram_bytes + io, rel=1e-3)
    assert not pred.resident
    small = predict(probes.conv_chain(512, 64, 32, data=False).program, M4MAX)
    assert small.resident and small.dram_bytes == pytest.approx(io, rel=0.05)
    # a bigger SRAM in the profile keeps everything on chip: fewer DRAM bytes, never slower
    roomy = dataclasses.replace(M4MAX, sram_mib=128.0)
    assert predict(chain, roomy).dram_bytes == pytest.approx(io, rel=0.05)
    assert predict(chain, roomy).total_ns <= pred.total_ns


def test_big_ops_are_fed_at_the_big_op_rate() -> None:
    chip = dataclasses.replace(M4MAX, per_op_us=0.0, floor_us=0.0, dispatch_us=0.0)
    single = predict(probes.single_conv(2048, 64, data=False).program, chip)  # 8 MiB, one op
    conv_ns = next(op.ns for op in single.ops if op.op_type == "conv")
    expected = 8 * MIB / chip.big_op_gbps + 2 * 2048 * 64 * 2 / chip.sram_gbps
    assert conv_ns == pytest.approx(expected, rel=1e-4)  # + the conv's tiny parameter consts
    chain = predict(probes.conv_chain(512, 64, 32, data=False).program, chip)  # 16 x 0.5 MiB
    assert chain.total_ns < single.total_ns  # same bytes order, fed at the small-op rate


def test_the_floor_is_a_minimum_not_an_added_cost() -> None:
    tiny = probes.single_conv(256, 64, data=False).program
    big = probes.conv_chain(512, 64, 128, height=64, data=False).program  # ~14 ms of compute
    no_floor = dataclasses.replace(M4MAX, floor_us=0.0)
    assert predict(tiny, M4MAX).total_ns == pytest.approx(M4MAX.floor_us * 1e3)
    assert predict(tiny, M4MAX).bound() == "floor"
    assert predict(big, M4MAX).total_ns == predict(big, no_floor).total_ns


def test_int8_weights_run_at_the_int8_rate() -> None:
    fp16 = predict(probes.conv_chain(512, 64, 128, height=64, data=False).program, M4MAX)
    int8 = predict(probes.int8_chain(512, 64, 128, data=False).program, M4MAX)
    assert fp16.bound() == "compute"
    assert fp16.ms / int8.ms == pytest.approx(M4MAX.int8_factor, rel=0.1)
    assert get_params("m3max").int8_factor == 1.0 and M4MAX.int8_factor == 2.0


def test_parameter_validation() -> None:
    good = M4MAX.to_dict()
    with pytest.raises(PerfModelError, match="exceeds the SoC's memory bandwidth"):
        params_from_dict("x", {**good, "dram_gbps": good["memory_gbps"] * 2})
    with pytest.raises(PerfModelError, match="a bigger op would get faster"):
        params_from_dict("x", {**good, "big_op_gbps": good["sram_gbps"] * 2})
    with pytest.raises(PerfModelError, match="int8_factor"):
        params_from_dict("x", {**good, "int8_factor": 0.5})
    with pytest.raises(PerfModelError, match="unknown keys"):
        params_from_dict("x", {**good, "speed": 1})
    with pytest.raises(PerfModelError, match="no performance-model parameters"):
        get_params("m9")
    assert read_params_file()["chips"]["m4max"]["calibrated"] is True


def test_a_chip_profile_with_another_sram_changes_the_model() -> None:
    profile = dataclasses.replace(get_chip("m4max"), sram_bytes=8 * MIB)
    assert get_params(profile).sram_mib == 8.0
    chain = probes.conv_chain(512, 64, 64, data=False).program
    assert predict(chain, get_params(profile)).dram_bytes > predict(chain, M4MAX).dram_bytes


def test_modeled_time_is_asked_of_the_model_not_the_backend() -> None:
    model = probes.conv_chain(64, 16, 4)
    kernel = runtime.compile(model.program, model.weights, backend="sim", chip="m4max")
    kernel.eval()
    assert not hasattr(kernel.stats, "modeled_ns")  # PerfStats holds only measured times
    expected = predict(model.program, M4MAX).total_ns
    assert perfmodel.modeled_ns(model.program, kernel.chip) == round(expected)
    assert perfmodel.modeled_ns(model.text, "m4max") == round(expected)
    assert perfmodel.modeled_ns(model.program, "no-such-chip") is None


def test_compile_and_load_time_per_kernel() -> None:
    """Reported: an M5 compiles a small conv in ~11 ms and loads it in ~1.7 ms; an M4
    compiles the 10 dynamic-pipeline kernels in ~0.4 s."""
    assert perfmodel.compile_load_ms(get_params("m5")) == pytest.approx(11.0 + 1.7)
    assert perfmodel.compile_load_ms(get_params("m4"), kernels=10) == pytest.approx(417.0)
