#!/usr/bin/env bash
# The reliability suite (faults, load, abuse) alone, with its figures table at the end;
# they are also written to .reliability/latest.json. Short mode is what ./test.sh runs;
# --soak runs every scenario bigger and longer (a 100,000-job backlog, minutes of chaos).
# Coverage is left to ./test.sh's full runs: measuring the test process alone says nothing
# here and slows the fuzzing down. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--soak" ]; then
  export RELIABILITY_SOAK=1
  shift
fi
exec ./test.sh tests/reliability --no-cov "$@"
