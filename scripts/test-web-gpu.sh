#!/usr/bin/env bash
# The GPU tests of crates/carebot-gpu in headless Chromium: the same async test bodies as
# `cargo test -p carebot-gpu`, built for wasm32 and run by wasm-bindgen-test-runner through
# chromedriver, on Chromium's WebGPU (SwiftShader without a GPU: no shader-f16, slow, so the tests
# use their small sizes there). A test fails, never skips, when the browser offers no WebGPU device.
#
# Needs: apt-get install -y chromium chromium-driver; rustup target add wasm32-unknown-unknown;
#        cargo install wasm-bindgen-cli --version <wasm-bindgen's version in Cargo.lock>
# Usage: scripts/test-web-gpu.sh [cargo test arguments, e.g. --test ops]
#        CAREBOT_TEST_SEED=… replays a seed (read when the tests are built: no env in a browser).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    echo "test-web-gpu: $*" >&2
    exit 1
}
wbg=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
[ -n "$wbg" ] || die "no wasm-bindgen in Cargo.lock"
command -v chromedriver >/dev/null || die "chromedriver not found (apt-get install -y chromium chromium-driver)"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium not found (apt-get install -y chromium chromium-driver)"
command -v wasm-bindgen-test-runner >/dev/null \
    || die "wasm-bindgen-test-runner not found (cargo install wasm-bindgen-cli --version $wbg)"
runner_version=$(wasm-bindgen-test-runner --version | awk '{ print $2 }')
[ "$runner_version" = "$wbg" ] \
    || die "wasm-bindgen-test-runner is $runner_version, Cargo.lock has wasm-bindgen $wbg (cargo install wasm-bindgen-cli --version $wbg)"

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER
CHROMEDRIVER=$(command -v chromedriver)
unset GECKODRIVER GECKODRIVER_REMOTE SAFARIDRIVER CHROMEDRIVER_REMOTE MSEDGEDRIVER
# Chromium's flags (--enable-unsafe-webgpu: headless Chromium has no WebGPU without it).
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/crates/carebot-gpu/webdriver.json"
# Seconds for one test binary's whole page; SwiftShader is slow.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-1800}"
export WASM_BINDGEN_TEST_DRIVER_TIMEOUT="${WASM_BINDGEN_TEST_DRIVER_TIMEOUT:-60}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# A debug build: the time goes to Chromium compiling shaders, not to our wasm, so an optimised build
# runs no faster (measured: ≈6 min either way) and rebuilds far slower.
cargo test --target wasm32-unknown-unknown -p carebot-gpu --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# A page whose browser stopped answering (chromedriver: "Timed out receiving message from
# renderer", seen once in CI on a page that passes here in 150 s) runs once more, alone; a test
# that failed, or a page that hangs twice, still fails. Cargo names the failed binaries last.
if [ "$status" -ne 0 ]; then
    failed=$(sed -n 's/^ *`-p carebot-gpu \(--lib\|--test [a-z_]*\)`$/\1/p' "$log")
    hung=$(awk '/^ *Running unittests src\/lib.rs/ { t = "--lib" }
                /^ *Running tests\/[a-z_]*\.rs/ { t = $2; sub(/^tests\//, "--test ", t); sub(/\.rs$/, "", t) }
                /Timed out receiving message from renderer/ && t != "" { print t; t = "" }' "$log")
    if [ -n "$failed" ] && [ -z "$(comm -23 <(sort -u <<<"$failed") <(sort -u <<<"$hung"))" ]; then
        status=0
        while read -r target; do
            echo "test-web-gpu: the browser stopped answering during $target: running it again" >&2
            # shellcheck disable=SC2086 # $target is two words: --test NAME
            cargo test --target wasm32-unknown-unknown -p carebot-gpu $target 2>&1 | tee -a "$log" || status=$?
        done <<<"$failed"
    fi
fi
# wasm-bindgen-test's summary lines: "test result: ok. N passed; M failed; …".
awk '/^test result:/ { p += $4; f += $6 } END { printf "browser GPU tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] || exit "$status"
grep -q '^test result: ok\. [1-9]' "$log" || die "no test ran in the browser"
