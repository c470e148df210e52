"""Every SQL statement this package sends to pg-boss's schema, and nothing else.

Each statement names the pg-boss behaviour it mirrors. ``{schema}`` stands for the
configured schema name, validated when settings load and substituted by ``render``;
every value is a bound ``:parameter``.
"""

from __future__ import annotations

import re

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")


def render(statement: str, schema: str) -> str:
    """The statement with the schema identifier filled in (quoted, after validation)."""
    if not _SCHEMA.match(schema):
        raise ValueError(f"invalid pg-boss schema name {schema!r}")
    return statement.replace("{schema}", f'"{schema}"')


# pg-boss 12 (all versions): is pg-boss installed in this schema? to_regclass answers
# NULL instead of raising when the version table is missing.
SCHEMA_INSTALLED = """
SELECT to_regclass(:version_table) IS NOT NULL AS installed
"""

# pg-boss 12 (all versions): the one-row version table its migrations keep current.
SCHEMA_VERSION = """
SELECT version FROM {schema}.version
"""
