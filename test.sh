#!/usr/bin/env bash
# Run the whole test suite: lint, type check, then pytest against a real PostgreSQL
# and real pg-boss (Node). The PostgreSQL is the one TEST_ADMIN_DATABASE_URL names, or
# else a throwaway server started for this run (scripts/with_test_postgres.py).
# Extra arguments go to pytest, e.g. ./test.sh tests/pgboss -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
# Style and types first: they take seconds and fail with a precise message.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary
# The wheel's client tools (psql) serve the tests that need them where none is installed.
PATH="$PATH:$(.venv/bin/python scripts/local_postgres.py)"
export PATH
exec .venv/bin/python scripts/with_test_postgres.py .venv/bin/python -m pytest --cov --cov-report=term "$@"
