"""Chip profiles: loading, naming, and what each profile rejects at compile time."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

from anetrain import runtime
from anetrain.errors import AnetrainError
from anetrain.hardware.chips import ChipProfile, chip_names, get_chip, profile_from_dict, provenance
from anetrain.mil import FP16, FP32, Builder, print_program
from anetrain.mil.blob import BlobWriter
from anetrain.mil.types import INT32
from anetrain.runtime.testing import conv_program, softmax_program

FAMILIES = ["m1", "m2", "m3", "m4", "m5"]


def test_every_family_has_base_pro_max_ultra() -> None:
    names = set(chip_names())
    for fam in FAMILIES:
        assert {fam, f"{fam}pro", f"{fam}max", f"{fam}ultra"} <= names
    for name in names:
        chip = get_chip(name)
        assert isinstance(chip, ChipProfile) and chip.name == name
        assert chip.compile_budget == 119
        assert chip.ane_cores == 16 * chip.dies
        assert chip.sram_bytes == 32 * 2**20
        assert not chip.multi_input_allowed and chip.sdpa_ignores_mask


def test_documented_figures() -> None:
    assert [get_chip(f).rated_tops for f in FAMILIES[:4]] == [11.0, 15.8, 18.0, 38.0]
    assert get_chip("m5").rated_tops is None  # no figure in the reference material
    assert get_chip("m3ultra").ane_cores == 32 and get_chip("m3ultra").rated_tops == 36.0
    assert get_chip("m1ultra").rated_tops == 2 * get_chip("m1").rated_tops
    for fam in ("m1", "m2"):
        chip = get_chip(fam)
        assert chip.program_versions == ("1.0",) and chip.opsets == ("ios16",)
        assert not chip.supports_op("cast") and chip.weights_one_blob_per_file
    for fam in ("m3", "m4", "m5"):
        assert "1.3" in get_chip(fam).program_versions and get_chip(fam).supports_op("cast")


def test_names_are_normalized_and_default_is_m4() -> None:
    assert get_chip("Apple M4 Max").name == "m4max"
    assert get_chip("M1-Pro").name == "m1pro"
    assert get_chip(None).name == runtime.DEFAULT_CHIP == "m4"
    chip = get_chip("m2")
    assert get_chip(chip) is chip
    with pytest.raises(runtime.UnknownChipError, match=r"unknown chip 'm9'.*m1, m1pro"):
        get_chip("m9")


def test_provenance_covers_every_profile_field() -> None:
    data = json.loads(resources.files("anetrain.hardware").joinpath("chips.json").read_text())
    documented = set(provenance())
    for key in data["defaults"]:
        if key not in ("notes", "dies"):
            assert key in documented, key


def test_profile_validation_errors() -> None:
    base = dataclasses.asdict(get_chip("m4"))
    base.pop("name")
    with pytest.raises(runtime.ChipProfileError, match="unknown profile keys"):
        profile_from_dict("x", {**base, "turbo": True})
    with pytest.raises(runtime.ChipProfileError, match="io_dtypes"):
        profile_from_dict("x", {**base, "io_dtypes": ["int8"]})
    with pytest.raises(runtime.ChipProfileError, match="compile_budget"):
        profile_from_dict("x", {**base, "compile_budget": -1})
    assert profile_from_dict("x", base).max_dim == 65536


def _cast_program(target: str) -> str:
    b = Builder(target)
    x = b.input("x", FP32, [1, 4, 1, 8])
    h = b.cast(x, "fp16", name="to16")
    b.returns(b.cast(b.mul(h, h, name="sq"), "fp32", name="to32"))
    return print_program(b.program())


def test_m1_rejects_cast_naming_the_op() -> None:
    m1_ok = dataclasses.replace(get_chip("m1"), io_dtypes=("fp16", "fp32"))
    with pytest.raises(runtime.UnsupportedOpError, match=r"op 'cast' \(statement 'to16' at line"):
        runtime.compile(_cast_program("ios16"), backend="sim", chip=m1_ok)
    runtime.compile(_cast_program("ios18"), backend="sim", chip="m4")  # fine on M4


def test_m1_rejects_program_1_3_text() -> None:
    text = print_program(softmax_program(8, 16, "ios18"))
    assert text.startswith("program(1.3)")
    with pytest.raises(
        runtime.UnsupportedOpError,
        match=r"program\(1\.3\) is not accepted by "
        r"Apple M1 \(m1, macOS 26\), which takes program\(1\.0\)",
    ):
        runtime.compile(text, backend="sim", chip="m1")
    # on macOS 15 the same M1 trained with program(1.3) kernels (maderix/ANE issue #3)
    assert runtime.compile(text, backend="sim", chip=get_chip("m1", "15")).chip.macos == "15"
    k = runtime.compile(print_program(softmax_program(8, 16, "ios16")), backend="sim", chip="m1")
    assert k.chip.name == "m1"


def test_m1_rejects_fp32_surfaces() -> None:
    b = Builder("ios16")
    b.returns(b.softmax(b.input("x", FP32, [1, 4, 1, 4]), axis=1))
    with pytest.raises(runtime.UnsupportedOpError, match=r"input 'x' is tensor<fp32.*fp16"):
        runtime.compile(b.program(), backend="sim", chip="m1")


def test_m1_needs_one_blob_per_weight_file() -> None:
    w = np.eye(8, dtype=np.float16).reshape(8, 8, 1, 1)
    writer = BlobWriter()
    offsets = [writer.add(w), writer.add(w)]
    b = Builder("ios16")
    x = b.input("x", FP16, [1, 8, 1, 4])
    y = b.conv(x, b.weight("W0", FP16, [8, 8, 1, 1], "all.bin", offsets[0]))
    b.returns(b.conv(y, b.weight("W1", FP16, [8, 8, 1, 1], "all.bin", offsets[1])))
    blobs = {"@model_path/weights/all.bin": writer.to_bytes()}
    with pytest.raises(runtime.UnsupportedOpError, match=r"'W1' shares weight file .*'W0'"):
        runtime.compile(b.program(), blobs, backend="sim", chip="m1")
    # a file holding two blobs is rejected on M1 even when the program reads only one of them
    one = Builder("ios16")
    x1 = one.input("x", FP16, [1, 8, 1, 4])
    one.returns(one.conv(x1, one.weight("W0", FP16, [8, 8, 1, 1], "all.bin", offsets[0])))
    with pytest.raises(runtime.WeightsError, match=r"holds 2 blobs.*one blob per weight file"):
        runtime.compile(one.program(), blobs, backend="sim", chip="m1")
    k = runtime.compile(b.program(), blobs, backend="sim", chip="m3")
    assert np.array_equal(k(np.ones((8, 4), np.float32)), np.ones((1, 8, 1, 4)))


def test_conv_input_channel_limit() -> None:
    """The original found a conv with 32000 input channels rejected (it uses matmul)."""
    prog, weights = conv_program(np.zeros((8, 32000), np.float16), 4)
    with pytest.raises(runtime.UnsupportedOpError, match=r"op 'conv'.*32000 input channels"):
        runtime.compile(prog, weights, backend="sim")


def test_dimension_limit() -> None:
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 64, 1, 2048])
    flat = b.reshape(x, b.const([1, 131072, 1, 1], dtype=INT32), name="flat")
    b.returns(b.reshape(flat, b.const([1, 64, 1, 2048], dtype=INT32), name="back"))
    with pytest.raises(
        runtime.UnsupportedOpError, match=r"'reshape' \(statement 'flat'.*above 65536"
    ):
        runtime.compile(b.program(), backend="sim")


def test_sdpa_needs_ios18() -> None:
    """Rejected by the parser's opset check or by the profile check, naming the op."""
    b = Builder("ios18")
    q = b.input("q", FP16, [1, 1, 4, 8])
    b.returns(b.scaled_dot_product_attention(q, q, q))
    text = print_program(b.program())
    text = text.replace("program(1.3)", "program(1.0)").replace("<ios18>", "<ios16>")
    with pytest.raises(AnetrainError, match=r"scaled_dot_product_attention.*ios18"):
        runtime.compile(text, backend="sim", chip="m2")
