#!/usr/bin/env bash
# Run the whole test suite against a real PostgreSQL and real pg-boss (Node).
# Extra arguments go to pytest, e.g. ./test.sh tests/pgboss -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/ensure_postgres.sh
exec .venv/bin/python -m pytest --cov --cov-report=term "$@"
