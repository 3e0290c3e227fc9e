"""The simulator's memory layout: transient buffers shared by a backend's kernels, staging
inputs, and surfaces whose pages are given back, without a bit of difference in the results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anetrain import runtime
from anetrain.mil import FP16, Builder, Program
from anetrain.runtime.sim import SimBackend
from anetrain.runtime.sim.buffers import Workspace
from anetrain.runtime.testing import conv_program

RNG = np.random.default_rng(11)


def chain(w: np.ndarray, depth: int, seq: int) -> tuple[Program, dict]:
    """``depth`` 1x1 convs by ``w`` with a tanh between: intermediate values of [C, seq]."""
    from anetrain.runtime.testing import Weights

    b = Builder("ios18")
    y = b.input("x", FP16, [1, w.shape[1], 1, seq])
    wts = Weights(b)
    weight = wts.add("W", w.reshape(*w.shape, 1, 1))
    for i in range(depth):
        y = b.tanh(b.conv(y, weight, name=f"c{i}"), name=f"t{i}")
    b.returns(y)
    return b.program(), wts.blobs()


def test_kernels_of_one_backend_share_their_transient_buffers() -> None:
    """Two kernels of one backend lay their intermediate values out in the same memory;
    interleaved evals give what kernels of separate backends give, and each kernel's own
    input and output surfaces keep their values across the other's evals."""
    w1 = (RNG.standard_normal((16, 16)) / 4).astype(np.float32)
    w2 = (RNG.standard_normal((16, 16)) / 4).astype(np.float32)
    be = SimBackend()
    k1 = be.compile(*chain(w1, 4, 32), name="k1")
    k2 = be.compile(*chain(w2, 4, 32), name="k2")
    starts = {
        k.name: min(b.ctypes.data for b in k.plan.transient if b.base is not None) for k in (k1, k2)
    }
    assert starts["k1"] == starts["k2"]  # both from the start of the shared block
    alone1 = SimBackend().compile(*chain(w1, 4, 32), name="k1")
    alone2 = SimBackend().compile(*chain(w2, 4, 32), name="k2")
    x1, x2 = RNG.standard_normal((2, 16, 32)).astype(np.float32)
    want1, want2 = alone1(x1).reshape(16, 32), alone2(x2).reshape(16, 32)
    k1.input.write(x1)
    k2.input.write(x2)
    for _ in range(2):
        k1.eval()
        k2.eval()
        assert np.array_equal(k2.output.read(), want2)
        assert np.array_equal(k1.output.read(), want1)  # not overwritten by k2's eval
        assert np.array_equal(k1.input.read(), alone1.input.read())


def test_a_staging_input_is_the_plans_buffer() -> None:
    """staging_input holds the plan's input buffer (an eval copies nothing in) and computes
    what the kernel's own input surface does, when written whole before each eval."""
    w = np.eye(8, dtype=np.float32) * 2
    be = SimBackend()
    k = be.compile(*conv_program(w, 16), name="a")
    other = be.compile(*conv_program(w * 3, 16), name="b")
    staging = k.staging_input()
    assert staging is k.staging_input()
    assert np.shares_memory(staging.values, k.plan.inputs[0])
    assert not np.shares_memory(k.input.values, k.plan.inputs[0])
    request = k.request(staging)
    for x in RNG.standard_normal((3, 8, 16)).astype(np.float32):
        other(x)  # another kernel of the backend: the staging contents are undefined now
        staging.write(x)
        request.eval()
        assert np.array_equal(k.output.read(), k(x).reshape(8, 16))


def test_base_kernels_stage_on_their_own_input() -> None:
    from anetrain.runtime.kernel import Kernel

    class Plain(Kernel):
        def _evaluate(self, request, qos):  # pragma: no cover - never evaluated
            return None

    spec = runtime.TensorSpec("x", FP16, (1, 2, 1, 4))
    k = Plain(name="p", backend="x", chip=runtime.get_chip("m4"), input_specs=[spec],
              output_specs=[spec])  # fmt: skip
    assert k.staging_input() is k.input and k.release_memory() == 0
    assert k.input.discard() == 0


def test_outputs_holding_folded_constants_are_copied_out_so_discarding_is_safe() -> None:
    """A returned concat with a constant-folded part holds that part from compile time: its
    surface must not be the plan's buffer (a discard would lose the constant), so it is
    copied out each eval; discarding any output surface then changes nothing."""
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 2, 1, 4096])
    c = b.const(np.full((1, 2, 1, 4096), 1.5, np.float16), name="c")
    folded = b.add(c, c, name="folded")  # all-constant: computed once, into the concat
    computed = b.mul(x, x, name="sq")
    b.returns(b.concat([computed, folded], axis=1, name="y"), b.add(x, x, name="x2"))
    k = SimBackend().compile(b.program(), {}, name="cat")
    assert k.plan.owned_outputs == [False, True]
    x_in = RNG.standard_normal((2, 4096)).astype(np.float32)
    want = [o.copy() for o in k(x_in)]
    for surface in k.outputs:
        assert surface.discard() > 0
        surface.values[...] = np.nan  # what undefined contents may be
    k.release_memory()
    got = k(x_in)
    for a, b_ in zip(want, got, strict=True):
        assert np.array_equal(a, b_)
    assert np.array_equal(got[0][0, 2:], np.full((2, 1, 4096), 3.0, np.float32))


@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
def test_an_output_computed_into_another_outputs_concat_is_copied_out(fast: bool) -> None:
    """``y`` is computed into its slice of the returned concat ``c``: a request with its own
    surface for ``c`` and the default one for ``y`` must leave ``y``'s fresh values there
    (restoring ``c``'s held surface around the request used to overwrite them)."""
    from anetrain.runtime.sim.fast import fast_available

    if fast and not fast_available()[0]:
        pytest.skip("the fast path needs numba (the 'fast' extra)")
    b = Builder("ios18")
    x = b.input("x", FP16, [1, 4, 1, 8])
    y = b.mul(x, x, name="y")
    b.returns(y, b.concat([y, x], axis=1, name="c"))
    k = SimBackend(fast=fast).compile(b.program(), {}, name="cat")
    first = (RNG.standard_normal((4, 8)) * 4).astype(np.float16).astype(np.float32)
    second = (first + 1).astype(np.float16).astype(np.float32)
    k(first)
    mine = k.new_surface(k.output_specs[1])
    k.inputs[0].write(second)
    k.request(k.inputs[0], outputs=[k.outputs[0], mine]).eval()
    squared = (second * second).astype(np.float16).astype(np.float32)
    assert np.array_equal(k.outputs[0].numpy()[0, :, 0], squared)
    assert np.array_equal(mine.numpy()[0, :4, 0], squared)
    assert np.array_equal(mine.numpy()[0, 4:, 0], second)
    kept = (first * first).astype(np.float16).astype(np.float32)  # the default c: as it was
    assert np.array_equal(k.outputs[1].numpy()[0, :4, 0], kept)


def test_a_workspace_without_room_falls_back_to_private_buffers() -> None:
    w = (RNG.standard_normal((16, 16)) / 4).astype(np.float32)
    small = SimBackend()
    small.workspace = Workspace(reserve=4096)  # too small for the plan: its own arrays
    k = small.compile(*chain(w, 3, 64), name="k")
    ref = SimBackend().compile(*chain(w, 3, 64), name="k")
    x = RNG.standard_normal((16, 64)).astype(np.float32)
    assert np.array_equal(k(x), ref(x))


# in a fresh interpreter, so RSS is this script's: eight kernels with 8 MiB of intermediate
# values each; resident after evaluating them all is about one kernel's, not eight
SCRIPT = """
import numpy as np
from anetrain.runtime.sim import SimBackend
from anetrain.mil import FP16, Builder, Program

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

C, S = 256, 2048  # a [C, S] float32 value is 2 MiB
rng = np.random.default_rng(0)
be = SimBackend()
kernels = []
for i in range(8):
    b = Builder("ios18")
    x = b.input("x", FP16, [1, C, 1, S])
    y = x
    for j in range(4):  # four live-at-once intermediate values
        y = b.add(y, b.mul(y, y, name=f"m{j}"), name=f"a{j}")
    b.returns(y)
    kernels.append(be.compile(b.program(), {}, name=f"k{i}"))
x = rng.standard_normal((C, S)).astype(np.float32)
warm = SimBackend().compile(b.program(), {}, name="warm")  # numba's kernels load once
warm(x)
del warm
before = rss()
for k in kernels:
    k.staging_input().write(x)
    k.request(k.staging_input()).eval()
print(rss() - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RSS from /proc")
def test_resident_transient_memory_is_one_kernels_not_the_sum() -> None:
    src = str(Path(runtime.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    grown = int(out.stdout.split()[-1])
    # each kernel: its 2 MiB input and up to ~4 MiB of intermediates in the shared block,
    # plus its own 2 MiB output; unshared, eight kernels would add about 48 MiB
    assert grown < 32 << 20, grown
