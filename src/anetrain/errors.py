"""Typed errors shared across anetrain.

Every error a user can trigger derives from :class:`AnetrainError`, so the CLI can print one
clear line (what, where, what to do) instead of a traceback.
"""

from __future__ import annotations


class AnetrainError(Exception):
    """Base class for user-facing errors."""


class MILError(AnetrainError):
    """A MIL program is malformed or ill-typed.

    ``line``/``col`` are 1-based positions in the source text when the error came from parsing.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        col: int | None = None,
        source: str | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.col = col
        self.source = source
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.line is not None:
            where.append(str(self.line))
            if self.col is not None:
                where.append(str(self.col))
        return f"{':'.join(where)}: {self.message}" if where else self.message

    def with_source(self, source: str) -> MILError:
        return type(self)(self.message, line=self.line, col=self.col, source=source)


class MILSyntaxError(MILError):
    """The text is not valid MIL syntax."""


class MILTypeError(MILError):
    """An operation's arguments or declared types are inconsistent."""


class WeightFileError(AnetrainError):
    """A MILBlob weight file is truncated, corrupt or does not match its reference."""
