"""The roofline model's sanity: monotonic in work, spilling slower, parameters checked, and
modeled time asked of the model for any compiled program."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anetrain import perfmodel, runtime
from anetrain.kernels import probes
from anetrain.perfmodel import PerfModelError, get_params, predict
from anetrain.perfmodel.costs import OpCost, ProgramCost
from anetrain.perfmodel.params import params_from_dict, read_params_file
from anetrain.runtime.chips import chip_names

M4MAX = get_params("m4max")
CHIPS = [get_params(name) for name in chip_names()]


def _cost(*ops: OpCost, weights: int = 0) -> ProgramCost:
    return ProgramCost(tuple(ops), weights, 0, 0)


def test_every_runtime_chip_has_parameters_and_only_m4max_is_calibrated() -> None:
    assert set(perfmodel.known_chips()) == set(chip_names())
    assert [p.chip for p in CHIPS if p.calibrated] == ["m4max"]
    for p in CHIPS:
        assert p.dram_gbps <= p.sram_gbps and p.int8_factor >= 1 and p.source


@pytest.mark.parametrize("params", CHIPS, ids=lambda p: p.chip)
def test_more_flops_never_faster(params: perfmodel.PerfParams) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        flops, w, a, io = (int(v) for v in rng.integers(0, 10**9, size=4))
        base = _cost(OpCost("x", "conv", flops, w, a, io), weights=w)
        more = _cost(OpCost("x", "conv", flops * 2 + 1, w, a, io), weights=w)
        assert predict(more, params).total_ns >= predict(base, params).total_ns
        more_bytes = _cost(OpCost("x", "conv", flops, w, a * 2 + 1, io * 2 + 1), weights=w)
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


def test_spilled_weights_are_slower_and_the_cliff_is_at_the_capacity() -> None:
    """The mechanics, on parameters with a clear SRAM/DRAM gap (the M4 Max fit has almost
    none: its chains show no cliff)."""
    chip = dataclasses.replace(M4MAX, sram_mib=28.0, sram_gbps=2000.0, dram_gbps=100.0)
    program = probes.conv_chain(512, 64, 32, data=False).program  # 16 MiB of weights
    roomy = dataclasses.replace(chip, sram_mib=64.0)
    tight = dataclasses.replace(chip, sram_mib=8.0)
    resident, spilled = predict(program, roomy), predict(program, tight)
    assert resident.resident and not spilled.resident
    assert spilled.total_ns > resident.total_ns
    just_below = predict(probes.conv_chain(512, 64, 54, data=False).program, chip)  # 27 MiB
    just_above = predict(probes.conv_chain(512, 64, 58, data=False).program, chip)  # 29 MiB
    assert just_below.resident and not just_above.resident


def test_int8_weights_run_at_the_int8_rate() -> None:
    fp16 = predict(probes.conv_chain(512, 64, 128, height=64, data=False).program, M4MAX)
    int8 = predict(probes.int8_chain(512, 64, 128, data=False).program, M4MAX)
    assert fp16.bound() == "compute"
    assert fp16.ms / int8.ms == pytest.approx(M4MAX.int8_factor, rel=0.1)


def test_parameter_validation() -> None:
    good = M4MAX.to_dict()
    with pytest.raises(PerfModelError, match="spilled weights would get faster"):
        params_from_dict("x", {**good, "dram_gbps": good["sram_gbps"] * 2})
    with pytest.raises(PerfModelError, match="int8_factor"):
        params_from_dict("x", {**good, "int8_factor": 0.5})
    with pytest.raises(PerfModelError, match="unknown keys"):
        params_from_dict("x", {**good, "speed": 1})
    with pytest.raises(PerfModelError, match="no performance-model parameters"):
        get_params("m9")
    assert read_params_file()["chips"]["m4max"]["calibrated"] is True


def test_modeled_time_is_asked_of_the_model_not_the_backend() -> None:
    model = probes.conv_chain(64, 16, 4)
    kernel = runtime.compile(model.program, model.weights, backend="sim", chip="m4max")
    kernel.eval()
    assert not hasattr(kernel.stats, "modeled_ns")  # PerfStats holds only measured times
    expected = predict(model.program, M4MAX).total_ns
    assert perfmodel.modeled_ns(model.program, kernel.chip) == round(expected)
    assert perfmodel.modeled_ns(model.text, "m4max") == round(expected)
    assert perfmodel.modeled_ns(model.program, "no-such-chip") is None


def test_an_op_larger_than_the_sram_streams_its_weights_spill_factor_times() -> None:
    """One 4096-channel conv (32 MiB of weights) against a chain of 64 512-channel convs with
    the same total: only the single op exceeds the SRAM and pays the spill factor."""
    chip = dataclasses.replace(M4MAX, sram_mib=24.0, spill_factor=5.0, per_op_us=0.0)
    single = probes.single_conv(4096, 64, data=False).program
    chain = probes.conv_chain(512, 64, 64, data=False).program
    big = predict(single, chip)
    conv_ns = next(op.ns for op in big.ops if op.op_type == "conv")
    weight_bytes = 4096 * 4096 * 2
    assert conv_ns >= 5.0 * weight_bytes / chip.dram_gbps
    no_spill = predict(single, dataclasses.replace(chip, spill_factor=1.0))
    assert big.total_ns > no_spill.total_ns
    assert (
        predict(chain, chip).total_ns
        == predict(chain, dataclasses.replace(chip, spill_factor=1.0)).total_ns
    )
