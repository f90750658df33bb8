"""Errors and repair notes of the token-stream layer."""
from __future__ import annotations

from dataclasses import dataclass


class VocabularyMismatchError(ValueError):
    """Ids are being decoded with a vocabulary other than the one that encoded them."""


class StreamDecodeError(ValueError):
    """A malformed token sequence, found in strict mode; `position` is the offending token's index."""

    def __init__(self, position: int, message: str):
        self.position = int(position)
        self.reason = message
        super().__init__(f"at token position {position}: {message}")


@dataclass(frozen=True)
class Repair:
    """What lenient decoding changed to return something usable, and where."""

    position: int
    kind: str      # e.g. "missing_end", "truncated_grid", "row_length", "foreign_code", "stray_token"
    message: str

    def __str__(self) -> str:
        return f"[{self.position}] {self.kind}: {self.message}"
