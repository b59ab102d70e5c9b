#!/usr/bin/env bash
# The GPU tests of crates/carebot-gpu in two browser engines: the same async test bodies as
# `cargo test -p carebot-gpu`, built once for wasm32 and run by wasm-bindgen-test-runner in headless
# Chromium (chromedriver; WebGPU on SwiftShader: no shader-f16, subgroups of 4, 1 GiB bindings,
# slow, so the tests use their small sizes there) and in headless Firefox ESR (geckodriver; WebGPU is
# wgpu-core on Mesa lavapipe: shader-f16, no subgroups, 128 MiB bindings). A test fails, never
# skips, when the browser offers no WebGPU device.
#
# Needs: apt-get install -y chromium chromium-driver firefox-esr; rustup target add wasm32-unknown-unknown;
#        scripts/install-web-tools.sh (wasm-bindgen-cli at Cargo.lock's version, geckodriver)
# Usage: scripts/test-web-gpu.sh [cargo test arguments, e.g. --test ops]
#        CAREBOT_BROWSERS="chromium firefox" (the default) picks the engines;
#        CAREBOT_TEST_SEED=… replays a seed (read when the tests are built: no env in a browser).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    echo "test-web-gpu: $*" >&2
    exit 1
}
wbg=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)
[ -n "$wbg" ] || die "no wasm-bindgen in Cargo.lock"
command -v wasm-bindgen-test-runner >/dev/null \
    || die "wasm-bindgen-test-runner not found (cargo install wasm-bindgen-cli --version $wbg)"
runner_version=$(wasm-bindgen-test-runner --version | awk '{ print $2 }')
[ "$runner_version" = "$wbg" ] \
    || die "wasm-bindgen-test-runner is $runner_version, Cargo.lock has wasm-bindgen $wbg (cargo install wasm-bindgen-cli --version $wbg)"
engines=${CAREBOT_BROWSERS:-chromium firefox}
for engine in $engines; do
    case $engine in
    chromium)
        command -v chromedriver >/dev/null || die "chromedriver not found (apt-get install -y chromium chromium-driver)"
        [ -x /usr/bin/chromium ] || die "/usr/bin/chromium not found (apt-get install -y chromium chromium-driver)"
        ;;
    firefox)
        command -v geckodriver >/dev/null || die "geckodriver not found (cargo install --locked geckodriver --version 0.37.1)"
        [ -x /usr/bin/firefox-esr ] || die "/usr/bin/firefox-esr not found (apt-get install -y firefox-esr)"
        ;;
    *) die "CAREBOT_BROWSERS: unknown engine $engine (chromium, firefox)" ;;
    esac
done

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
unset CHROMEDRIVER GECKODRIVER GECKODRIVER_REMOTE SAFARIDRIVER CHROMEDRIVER_REMOTE MSEDGEDRIVER
# Each engine's capabilities: Chromium's flags (no WebGPU headless without --enable-unsafe-webgpu),
# Firefox's WebGPU preferences (off by default in ESR; lavapipe is on its blocklist).
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/crates/carebot-gpu/webdriver.json"
# Seconds for one test binary's whole page; SwiftShader is slow.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-1800}"
export WASM_BINDGEN_TEST_DRIVER_TIMEOUT="${WASM_BINDGEN_TEST_DRIVER_TIMEOUT:-60}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A debug build: the time goes to the browser compiling shaders, not to our wasm, so an optimised
# build runs no faster (measured in Chromium: ≈6 min either way) and rebuilds far slower. The
# second engine reuses the first one's build.
run_engine() {
    local engine=$1 status=0 engine_log
    engine_log=$(mktemp)
    echo "== GPU kernels in headless $engine [$(date +%T)]"
    if [ "$engine" = chromium ]; then
        CHROMEDRIVER=$(command -v chromedriver) cargo test --target wasm32-unknown-unknown -p carebot-gpu --no-fail-fast "${@:2}" 2>&1 | tee "$engine_log" || status=$?
    else
        GECKODRIVER=$(command -v geckodriver) cargo test --target wasm32-unknown-unknown -p carebot-gpu --no-fail-fast "${@:2}" 2>&1 | tee "$engine_log" || status=$?
    fi
    # A page whose browser stopped answering (chromedriver: "Timed out receiving message from
    # renderer", seen once in CI on a page that passes here in 150 s) runs once more, alone; a test
    # that failed, or a page that hangs twice, still fails. Cargo names the failed binaries last.
    if [ "$status" -ne 0 ] && [ "$engine" = chromium ]; then
        failed=$(sed -n 's/^ *`-p carebot-gpu \(--lib\|--test [a-z_]*\)`$/\1/p' "$engine_log")
        hung=$(awk '/^ *Running unittests src\/lib.rs/ { t = "--lib" }
                    /^ *Running tests\/[a-z_]*\.rs/ { t = $2; sub(/^tests\//, "--test ", t); sub(/\.rs$/, "", t) }
                    /Timed out receiving message from renderer/ && t != "" { print t; t = "" }' "$engine_log")
        if [ -n "$failed" ] && [ -z "$(comm -23 <(sort -u <<<"$failed") <(sort -u <<<"$hung"))" ]; then
            status=0
            while read -r target; do
                echo "test-web-gpu: the browser stopped answering during $target: running it again" >&2
                # shellcheck disable=SC2086 # $target is two words: --test NAME
                CHROMEDRIVER=$(command -v chromedriver) cargo test --target wasm32-unknown-unknown -p carebot-gpu $target 2>&1 | tee -a "$engine_log" || status=$?
            done <<<"$failed"
        fi
    fi
    # wasm-bindgen-test's summary lines: "test result: ok. N passed; M failed; …".
    awk -v e="$engine" '/^test result:/ { p += $4; f += $6 } END { printf "browser GPU tests in %s: %d passed, %d failed\n", e, p, f }' "$engine_log" | tee -a "$log"
    grep -q '^test result: ok\. [1-9]' "$engine_log" || { echo "test-web-gpu: no test ran in $engine" >&2; status=1; }
    rm -f "$engine_log"
    return "$status"
}
overall=0
for engine in $engines; do
    run_engine "$engine" "$@" || overall=1
done
cat "$log"
exit "$overall"
