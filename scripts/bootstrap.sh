#!/usr/bin/env bash
# Prepare a checkout to run: the Python virtual environment with every dependency,
# and the pinned pg-boss tooling (Node runtime + pg-boss CLI). Idempotent and quiet
# when nothing changed, so both ./dev.sh and ./test.sh call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the requirement files change.
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

deploy/pgboss/install.sh
