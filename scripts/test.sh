#!/usr/bin/env bash
# The project's test command: fetch the registry-hosted test data, then run every test and end
# with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
data_env="$(scripts/fetch-test-data.sh)"; eval "$data_env"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
echo "== native tests [$(date +%T)]"
cargo test --release --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# The kernel tests again on 512-bit lavapipe lanes (ignored by other drivers): subgroups of 16
# invocations, so that a decode workgroup's subgroups each take several row pairs, which 8-wide
# subgroups never do (shaders/matvec.wgsl).
# --workspace, as above: with -p carebot-gpu cargo resolves features for that crate alone and
# rebuilds its dependencies (tokenizers and others: minutes), where this reuses the binary above.
if [ $# -eq 0 ]; then
    echo "== kernel tests on 512-bit lavapipe lanes [$(date +%T)]"
    LP_NATIVE_VECTOR_WIDTH=512 cargo test --release --workspace --test ops 2>&1 | tee -a "$log" || status=$?
fi
# The cooperative-matrix kernels on Mesa 26's lavapipe (Debian 12's has no cooperative matrices),
# where .ci/run set it up (scripts/test-coop.sh).
if [ $# -eq 0 ]; then
    if [ -d "${CAREBOT_COOP_ROOT:-/opt/carebot-trixie}" ]; then
        scripts/test-coop.sh run 2>&1 | tee -a "$log" || status=$?
    else
        echo "note: no lavapipe with cooperative matrices here (scripts/test-coop.sh setup): their kernels untested"
    fi
fi
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
