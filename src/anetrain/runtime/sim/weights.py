"""Resolve BLOBFILE constants from the weights dict, once, at compile time.

The compiled kernel keeps its own float32 (or int8/uint8) copies, so mutating the weights dict,
its buffers or any file afterwards changes nothing: the hardware bakes weights the same way.
"""

from __future__ import annotations

import numpy as np

from anetrain.errors import WeightFileError
from anetrain.hardware.chips import ChipProfile
from anetrain.mil.blob import BlobFile, read_blob_file
from anetrain.mil.ir import Literal, Operation
from anetrain.runtime.errors import WeightsError
from anetrain.runtime.sim.context import storage_dtype


class WeightResolver:
    """Parses each weight file once and copies out the blobs the program references."""

    def __init__(self, weights: dict[str, bytes], chip: ChipProfile) -> None:
        self.weights = weights
        self.chip = chip
        self._files: dict[str, BlobFile] = {}
        self.total_bytes = 0

    def _file(self, path: str) -> BlobFile:
        if path not in self._files:
            try:
                blob = read_blob_file(self.weights[path], strict=False)
            except WeightFileError as err:
                raise WeightsError(f"weights[{path!r}]: {err}") from None
            if self.chip.weights_one_blob_per_file and len(blob) != 1:
                raise WeightsError(
                    f"weights[{path!r}] holds {len(blob)} blobs, but {self.chip.display} "
                    "accepts only one blob per weight file (offset 64); write each matrix to "
                    "its own file"
                )
            self._files[path] = blob
        return self._files[path]

    def resolve(self, op: Operation, lit: Literal) -> np.ndarray:
        """The constant's value as a private, read-only array in simulator storage dtype."""
        ref = lit.blob
        assert ref is not None
        blob = self._file(ref.path)
        want = lit.type.dtype.numpy
        try:
            data = blob.read(ref.offset, dtype=want, shape=lit.type.shape)
        except WeightFileError as err:
            raise WeightsError(f"const '{op.name}': {err}") from None
        self.total_bytes += data.nbytes
        if self.total_bytes > self.chip.max_weight_bytes:
            raise WeightsError(
                f"const '{op.name}': program weights exceed {self.chip.max_weight_bytes} bytes, "
                f"the single-program ceiling assumed for {self.chip.display}; split the program"
            )
        out = data.astype(storage_dtype(lit.type.dtype))  # always a copy
        out.flags.writeable = False
        return out
