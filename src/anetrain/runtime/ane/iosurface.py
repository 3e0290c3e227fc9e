"""IOSurface-backed surfaces: the runtime's :class:`Surface` over an IOSurface's own memory.

The ANE reads inputs from and writes outputs into IOSurfaces in place, so the surface's NumPy
views point straight at the IOSurface (no copies), and every access holds ``IOSurfaceLock``
(read-only for reads) like the original's ``io_*`` helpers. The views keep the IOSurface alive
(:class:`~anetrain.runtime.ane.objc_bridge.SurfaceMemory` is their base).

Evaluation fails with status 0x1d on surfaces smaller than about 48 KiB (mechramc/Orion,
docs/ane_constraints.md), so every surface is allocated at least at the chip profile's
``min_surface_bytes``, rounded up to whole pages; the tensor is the first ``nbytes`` of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from anetrain.runtime.ane.objc_bridge import AneCallError
from anetrain.runtime.errors import SurfaceError
from anetrain.runtime.surface import Surface, TensorSpec

PAGE_BYTES = 16384  # the arm64 macOS page size (sysctl hw.pagesize on Apple silicon)


def surface_alloc_bytes(specs: Sequence[TensorSpec], floor: int) -> int:
    """One allocation size for a group of inputs (or outputs): the largest tensor, at least
    ``floor``, page-rounded. Orion reports that a request's inputs (and its outputs) must all
    have the same allocation size, so a group shares one size."""
    need = max([floor, *(s.nbytes for s in specs)])
    return -(-need // PAGE_BYTES) * PAGE_BYTES


class AneSurface(Surface):
    """A :class:`Surface` over the first ``spec.nbytes`` bytes of an ``alloc_bytes`` IOSurface.

    ``iosurface`` is the IOSurfaceRef and ``ane_object`` its ``_ANEIOSurfaceObject`` wrapper,
    made once so that every request built on this surface reuses it.
    """

    def __init__(self, bridge: Any, spec: TensorSpec, alloc_bytes: int) -> None:
        self._bridge = bridge
        self.alloc_bytes = max(alloc_bytes, spec.nbytes)
        try:
            self.iosurface = bridge.create_surface(self.alloc_bytes)
            with self._hold(read_only=False):
                memory = np.asarray(bridge.surface_memory(self.iosurface, self.alloc_bytes))
            self.ane_object = bridge.wrap_surface(self.iosurface)
        except AneCallError as err:
            raise SurfaceError(
                f"cannot create an IOSurface for {spec.dtype}{list(spec.shape)} "
                f"({self.alloc_bytes} bytes): {err}"
            ) from err
        super().__init__(spec.shape, spec.dtype, buffer=memory, lock=self._hold, name=spec.name)

    @contextlib.contextmanager
    def _hold(self, read_only: bool) -> Iterator[None]:
        self._bridge.lock(self.iosurface, read_only)
        try:
            yield
        finally:
            self._bridge.unlock(self.iosurface, read_only)

    def belongs_to(self, bridge: Any) -> bool:
        return self._bridge is bridge
