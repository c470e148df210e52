"""Every installable pg-boss release from 10.0.0 to 12.38.0, installed side by side.

``tests/versions/package.json`` lists each release under an npm alias
(``"pg-boss-11.0.0": "npm:pg-boss@11.0.0"``) and its lock file pins them, so one
``npm ci`` installs all of them into ``tests/versions/node_modules/pg-boss-X.Y.Z``.
The install is skipped while a stamp newer than the lock file exists, so it runs once
per checkout (about 25 s) and is shared by parallel test workers through a file lock.

The list is npm's ``pg-boss`` versions from 10.0.0 to 12.38.0 (``npm view pg-boss
versions``). Releases npm does not list (11.1.0, 12.6.0, 12.7.0, 12.10.0, 12.19.0, 12.36.0,
12.37.0, ...) cannot be installed and are not in it.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from tests.support import runtime
from tests.support.node_boss import NodeBoss, PgBossMigrateError, _clean_env

RELEASES_DIR = runtime.REPO_ROOT / "tests" / "versions"
MODULES = RELEASES_DIR / "node_modules"
_LOCK_FILE = RELEASES_DIR / "package-lock.json"
_STAMP = MODULES / ".installed-from-lock"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@cache
def releases() -> list[str]:
    """Every release the package file lists, oldest first."""
    dependencies = json.loads((RELEASES_DIR / "package.json").read_text())["dependencies"]
    return sorted((name.removeprefix("pg-boss-") for name in dependencies), key=version_key)


@contextmanager
def _install_lock() -> Iterator[None]:
    with open(RELEASES_DIR / ".install.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _installed() -> bool:
    return _STAMP.exists() and _STAMP.stat().st_mtime >= _LOCK_FILE.stat().st_mtime


def install() -> None:
    """Install every release from the lock file, unless that was done already."""
    if _installed():
        return
    with _install_lock():
        if _installed():
            return
        subprocess.run(
            [
                runtime.npm(),
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--engine-strict=false",
                "--loglevel=error",
            ],
            cwd=RELEASES_DIR,
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        _STAMP.touch()


def package_dir(version: str) -> Path:
    """The installed package folder of one release."""
    return MODULES / f"pg-boss-{version}"


@cache
def schema_of(version: str) -> int:
    """The schema version a release installs (its ``version.json`` or package.json)."""
    folder = package_dir(version)
    package = json.loads((folder / "package.json").read_text())
    if "pgboss" in package:
        return int(package["pgboss"]["schema"])
    return int(json.loads((folder / "version.json").read_text())["schema"])


def cli(version: str) -> Path | None:
    """The release's own CLI (from 12.8.0), or None."""
    path = package_dir(version) / "dist" / "cli.js"
    return path if path.exists() else None


def has_doctor(version: str) -> bool:
    """``pg-boss doctor`` exists from 12.26.0."""
    path = cli(version)
    return path is not None and "doctor" in path.read_text()


def migrate_with_cli(database_url: str, schema: str, version: str, timeout: float = 300.0) -> None:
    """Install the release's schema with its own CLI (``pg-boss migrate``)."""
    path = cli(version)
    if path is None:
        raise ValueError(f"pg-boss {version} has no CLI")
    _run_cli(path, "migrate", database_url, schema, timeout)


def install_schema(database_url: str, schema: str, version: str) -> None:
    """Install the release's schema the way that release can: its CLI from 12.8.0, before
    that its own ``start()`` with ``migrate: true``."""
    if cli(version) is not None:
        migrate_with_cli(database_url, schema, version)
        return
    NodeBoss(
        database_url, schema, package_dir=package_dir(version), migrate=True, supervise=False, schedule=False
    ).close()


def doctor(database_url: str, schema: str, version: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """The release's ``pg-boss doctor`` against the schema; exit 0 means no drift."""
    path = cli(version)
    if path is None:
        raise ValueError(f"pg-boss {version} has no CLI")
    return subprocess.run(
        [str(runtime.node()), str(path), "doctor", "--connection-string", database_url, "--schema", schema],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=RELEASES_DIR,
        env=_clean_env(),
    )


def _run_cli(path: Path, command: str, database_url: str, schema: str, timeout: float) -> None:
    result = subprocess.run(
        [str(runtime.node()), str(path), command, "--connection-string", database_url, "--schema", schema],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=RELEASES_DIR,
        env=_clean_env(),
    )
    if result.returncode != 0:
        raise PgBossMigrateError(f"pg-boss {command} exited {result.returncode}:\n{result.stderr}\n{result.stdout}")
