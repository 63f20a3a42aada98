"""The error raised for bad input, worded so that a user can find the culprit."""

from __future__ import annotations


class EquipotInputError(ValueError):
    """Bad user input: names the source (file), the structure index and the field."""

    def __init__(self, message: str, source: str | None = None, index: int | None = None,
                 field: str | None = None):
        where = [part for part in (
            str(source) if source is not None else None,
            f"structure {index}" if index is not None else None,
            f"field '{field}'" if field is not None else None,
        ) if part]
        super().__init__(": ".join(where + [message]))
        self.source, self.index, self.field = source, index, field


class EquipotRunError(RuntimeError):
    """A run that ends without its result (training diverged, a failed check): says why, and
    what it left behind."""
