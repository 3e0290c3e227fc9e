"""The ``sim`` backend: a NumPy executor of the MIL text the ANE would get."""

from anetrain.runtime.sim.backend import SimBackend

__all__ = ["SimBackend"]
