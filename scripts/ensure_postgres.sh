#!/usr/bin/env bash
# Make sure a PostgreSQL server answers for the tests: the one named by
# TEST_ADMIN_DATABASE_URL, or else the machine's own cluster on 127.0.0.1:5432,
# which is started when it is installed but down.
set -euo pipefail

if [ -n "${TEST_ADMIN_DATABASE_URL:-}" ]; then
  exit 0
fi
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
    sleep 1
  done
fi
echo "No PostgreSQL at 127.0.0.1:5432; set TEST_ADMIN_DATABASE_URL to a server the tests may create databases on." >&2
exit 1
