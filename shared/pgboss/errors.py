"""Errors of the pg-boss client, placed in the package's one exception tree."""

from __future__ import annotations

from collections.abc import Iterable

from shared.errors import NotFound, SchemaNotReady


class SchemaMissing(SchemaNotReady):
    """pg-boss is not installed in the configured schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        super().__init__(f"pg-boss schema {schema!r} is missing (no {schema}.version table)")


class UnsupportedSchemaVersion(SchemaNotReady):
    """pg-boss's schema is at a version this package has not been proven against."""

    def __init__(self, found: int, supported: Iterable[int]) -> None:
        self.found = found
        self.supported = tuple(sorted(supported))
        low, high = self.supported[0], self.supported[-1]
        super().__init__(
            f"pg-boss schema version {found} is unsupported; supported range is {low}..{high}"
        )


class QueueNotFound(NotFound):
    """The named pg-boss queue does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"queue {name!r} does not exist")
