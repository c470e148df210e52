#!/usr/bin/env bash
# The interop suite (tests/interop) once per pg-boss family, against its oldest and its newest
# installable release: that release's schema and its Node pg-boss (TEST_PGBOSS_RELEASE), from
# tests/versions/. Prints each run's duration and the total; exits non-zero if any run failed.
# Extra arguments go to every pytest run, e.g. scripts/interop_families.sh -x
#
# One PostgreSQL serves every run: the one TEST_ADMIN_DATABASE_URL names, or else a throwaway
# server (scripts/with_test_postgres.py). Expects .venv (./test.sh or scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# One line per family (README, "pg-boss versions"): schemas, then oldest and newest release.
# 12.38.0, the newest of 33-46, is the pinned release the main suite's interop run already uses.
FAMILIES=(
  "21-24 10.0.0 10.4.2"
  "25-29 11.0.0 12.11.2"
  "30 12.12.0 12.18.3"
  "31-32 12.19.1 12.21.1"
  "33-46 12.22.0"
)
# The wheel's client tools (psql), as ./test.sh gives them.
PATH="$PATH:$(.venv/bin/python scripts/local_postgres.py)"
export PATH
if [[ -z ${TEST_ADMIN_DATABASE_URL:-} ]]; then
  exec .venv/bin/python scripts/with_test_postgres.py "$0" "$@"
fi

# Installs every release of tests/versions once (a no-op while its lock file is unchanged).
.venv/bin/python -c "from tests.support import releases; releases.install()"

summary=()
failed=0
total_start=$SECONDS
for family in "${FAMILIES[@]}"; do
  read -r schemas versions <<<"$family"
  for release in $versions; do
    echo "== interop suite against pg-boss $release (family of schemas $schemas)"
    start=$SECONDS
    if TEST_PGBOSS_RELEASE=$release .venv/bin/python -m pytest -q -p no:cacheprovider tests/interop "$@"; then
      status=passed
    else
      status=FAILED
      failed=1
    fi
    summary+=("$(printf '%-8s %-6s %-6s %4d s' "$release" "$schemas" "$status" $((SECONDS - start)))")
  done
done

echo "== interop suite per pg-boss family"
printf '%s\n' "${summary[@]}"
echo "total: $((SECONDS - total_start)) s"
exit $failed
