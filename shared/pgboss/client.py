"""``PgBoss``: the one object that reads and writes pg-boss's tables.

Function modules call its verbs and get domain objects back; they never see SQL or
a cursor. Statements come from ``shared.pgboss.sql``, rendered once for the schema.
"""

from __future__ import annotations

from shared.db import Database
from shared.pgboss import sql
from shared.pgboss.errors import SchemaMissing, UnsupportedSchemaVersion

# Schema versions whose behaviour the interop suite has proven equal to pg-boss's.
# 46 is pg-boss 12.38.0.
SUPPORTED_SCHEMA_VERSIONS: frozenset[int] = frozenset({46})


class PgBoss:
    """Client of one pg-boss schema in one database."""

    def __init__(self, db: Database, schema: str = "pgboss") -> None:
        self.db = db
        self.schema = schema
        self._statements: dict[str, str] = {}

    def _sql(self, statement: str) -> str:
        rendered = self._statements.get(statement)
        if rendered is None:
            rendered = self._statements[statement] = sql.render(statement, self.schema)
        return rendered

    def schema_version(self) -> int:
        """The installed schema version; raises ``SchemaMissing`` when pg-boss is absent."""
        rows = self.db.run(
            self._sql(sql.SCHEMA_INSTALLED),
            {"version_table": f'"{self.schema}".version'},
            safe_to_retry=True,
        )
        if not rows[0]["installed"]:
            raise SchemaMissing(self.schema)
        return int(self.db.run(self._sql(sql.SCHEMA_VERSION), safe_to_retry=True)[0]["version"])

    def check_schema(self) -> int:
        """The schema version, after checking that this package supports it."""
        version = self.schema_version()
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise UnsupportedSchemaVersion(version, SUPPORTED_SCHEMA_VERSIONS)
        return version
