"""Errors raised by the data layer.

All derive from :class:`anetrain.errors.AnetrainError` so the CLI prints them as one line. Messages
say what is wrong, where (file, token position), and what to do about it.
"""

from __future__ import annotations

from anetrain.errors import AnetrainError


class DataError(AnetrainError):
    """A token file, text input or sampler state is unusable."""


class TokenizerError(DataError):
    """A ``tokenizer.bin`` is malformed, or text cannot be encoded with it."""


class DownloadError(DataError):
    """A dataset could not be fetched or its archive is not what was expected."""
