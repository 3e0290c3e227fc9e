"""Shared test setup."""

import anetrain  # noqa: F401  (first: it picks OpenBLAS's kernels before NumPy loads them)
