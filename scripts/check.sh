#!/usr/bin/env bash
# Every check CI runs, on a fresh Debian machine: installs what the tests need
# (scripts/install-deps.sh test), checks formatting, then runs every test with clippy's lints as
# errors (scripts/test.sh: native; scripts/test-web.sh: Chromium and Firefox), and fuzzes each
# target briefly. `.ci/run` is this script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# Each stage's header has the time of day, so that a log shows where a run's time goes.
echo "== install [$(date +%T)]"
# (Assigned first: a failing install stops the script, which eval "$(…)" would not.)
tools_env="$(scripts/install-deps.sh test)"
eval "$tools_env"
echo "== fmt [$(date +%T)]"; cargo fmt --all -- --check
# clippy, natively and for wasm32, inside the builds the tests make anyway: clippy-driver wraps
# rustc for the workspace's crates (as `cargo clippy` does) in the native release build of every
# test and example, the wasm32 build of the browser kernel tests and the page's wasm32 build, and
# -D warnings fails them on any lint. Two check-only builds of every dependency (≈ 10 minutes of a
# cold run, BENCHMARKS.md) are saved. Locally: cargo clippy --workspace --all-targets -- -D warnings.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER RUSTFLAGS="-D warnings"
echo "== tests (with clippy) [$(date +%T)]"; scripts/test.sh && scripts/test-web.sh
# Every fuzz target for 20 s from the committed seeds (nightly and cargo-fuzz are installed if
# missing: ≈ 7 min cold on a 2-core VM, BENCHMARKS.md).
echo "== fuzz [$(date +%T)]"; scripts/fuzz.sh 20
echo "== every check passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
