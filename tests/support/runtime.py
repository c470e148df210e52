"""Where the tests find Node and npm: one place, so a change of runtime is one edit.

Node is the runtime pinned for pg-boss (``deploy/pgboss/node``, which installs it on
first use). npm is the one in the virtual environment when the environment carries a
Node wheel, else the machine's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def node() -> Path:
    """The Node executable that runs pg-boss in tests."""
    return REPO_ROOT / "deploy" / "pgboss" / "node"


def npm() -> str:
    """The npm executable used to install pg-boss releases."""
    beside_python = Path(sys.executable).parent / "npm"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("npm")
    if found is None:
        raise RuntimeError("npm not found: install Node.js/npm to install pg-boss releases")
    return found
