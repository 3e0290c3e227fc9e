"""IOSurface-backed surfaces: the runtime's :class:`Surface` over an IOSurface's own memory.

The ANE reads inputs from and writes outputs into IOSurfaces in place, so the surface's NumPy
views point straight at the IOSurface (no copies), and every access holds ``IOSurfaceLock``
(read-only for reads) like the original's ``io_*`` helpers. Keep a surface alive while using
views taken from it: the views do not keep the IOSurface alive on their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from anetrain.runtime.ane.objc_bridge import AneCallError
from anetrain.runtime.errors import SurfaceError
from anetrain.runtime.surface import Surface, TensorSpec


class AneSurface(Surface):
    """A :class:`Surface` whose bytes are a flat IOSurface of ``spec.nbytes`` bytes.

    ``iosurface`` is the IOSurfaceRef and ``ane_object`` its ``_ANEIOSurfaceObject`` wrapper,
    made once so that every request built on this surface reuses it.
    """

    def __init__(self, bridge: Any, spec: TensorSpec) -> None:
        self._bridge = bridge
        try:
            self.iosurface = bridge.create_surface(spec.nbytes)
            with self._hold(read_only=False):
                memory = bridge.surface_memory(self.iosurface, spec.nbytes)
            self.ane_object = bridge.wrap_surface(self.iosurface)
        except AneCallError as err:
            raise SurfaceError(
                f"cannot create an IOSurface for {spec.dtype}{list(spec.shape)} "
                f"({spec.nbytes} bytes): {err}"
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
