#!/usr/bin/env bash
# Run the whole test suite: lint, type check, then pytest against a real PostgreSQL
# and real pg-boss (Node).
# Extra arguments go to pytest, e.g. ./test.sh tests/pgboss -x
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/ensure_postgres.sh
# Style and types first: they take seconds and fail with a precise message.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary
exec .venv/bin/python -m pytest --cov --cov-report=term "$@"
