"""Errors of the pg-boss client, placed in the package's one exception tree."""

from __future__ import annotations

from collections.abc import Iterable

from shared.errors import InvalidRequest, NotFound, RequestError, SchemaNotReady
from shared.pgboss.capabilities import SUPPORTED_RELEASES, releases_of


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
            f"pg-boss schema version {found} (pg-boss {releases_of(found)}) is unsupported;"
            f" supported range is {low}..{high} (pg-boss {SUPPORTED_RELEASES})"
        )


class QueueNotFound(NotFound):
    """The named pg-boss queue does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"queue {name!r} does not exist")


class InvalidQueue(InvalidRequest):
    """A queue pg-boss would refuse to create (bad name, or its own dead letter queue)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, [{"loc": [field], "msg": message, "type": "value_error"}])


class SingletonKeyRequired(InvalidRequest):
    """A job for a key_strict_fifo queue came without a singletonKey."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        message = f"queue {queue!r} has policy key_strict_fifo; every job needs a singletonKey"
        super().__init__(message, [{"loc": ["options", "singletonKey"], "msg": message, "type": "missing"}])


class InternalQueue(RequestError):
    """pg-boss's own queues (``__pgboss__*``) are worked by pg-boss in Node only."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"queue {name!r} is internal to pg-boss and cannot be fetched from")


class OptionNotSupported(InvalidRequest):
    """An option the installed pg-boss schema does not have; refused, never dropped."""

    def __init__(self, option: str, schema_version: int, releases: str, *, index: int | None = None) -> None:
        self.option = option
        self.schema_version = schema_version
        message = (
            f"option {option!r} is not supported by the installed pg-boss schema version {schema_version}"
            f" (pg-boss {releases}); it needs a newer pg-boss"
        )
        loc: list[str | int] = ["jobs", index] if index is not None else []
        loc += ["options", option.split(" ")[0]]
        super().__init__(message, [{"loc": loc, "msg": message, "type": "not_supported"}])
