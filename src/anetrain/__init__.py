"""anetrain: train transformers on Apple's Neural Engine, or on its simulator anywhere."""

from anetrain.blas import select_kernels

__version__ = "0.1.0"

select_kernels()  # before anything loads NumPy's OpenBLAS (see anetrain.blas)
