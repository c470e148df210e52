#!/usr/bin/env bash
# Set everything up (virtual environment, dependencies, pinned pg-boss tooling) and
# run every function locally, each on its own port. Uses DATABASE_URL when set,
# otherwise a private PostgreSQL under .local/. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python scripts/dev.py "$@"
