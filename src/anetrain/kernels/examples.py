"""The example programs shipped under ``examples/mil/``, regenerated from the kernel generators.

``python -m anetrain.kernels.examples [DIR]`` rewrites them; a test keeps them in sync.
"""

from __future__ import annotations

import sys
from pathlib import Path

from anetrain.kernels import probes
from anetrain.kernels.dyn_matmul import dyn_matmul_program
from anetrain.mil.model import MILModel


def example_models() -> dict[str, MILModel]:
    return {
        "dyn_matmul": MILModel(dyn_matmul_program(768, 2048, 256)),
        "conv_fp32_io": probes.single_conv(256, 64),
        "softmax_vocab": probes.softmax_vocab(32000, 256),
        "rmsnorm": probes.rmsnorm(768, 256),
        "rmsnorm_m1": probes.rmsnorm(768, 256, target="ios16"),
        "int8_w8a8": probes.int8_chain(256, 16, depth=3),
    }


def write_examples(directory: Path) -> list[Path]:
    """Each example in its own folder, so weights/ never collide: ``NAME/NAME.mil``."""
    return [model.save(directory / name, f"{name}.mil") for name, model in example_models().items()]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/mil")
    for path in write_examples(target):
        print(path)
