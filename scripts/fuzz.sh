#!/usr/bin/env bash
# Every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 30), starting from the
# committed seeds (fuzz/seeds/TARGET: real headers, configs and templates from the test models),
# in a scratch corpus so the seeds stay as committed. Installs nightly and cargo-fuzz if missing.
# A crash fails the run and leaves its input under fuzz/artifacts/TARGET/.
#   scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs="${1:-30}"
shift || true
# The fuzz build is nightly's and instruments every crate itself: CI's stable clippy wrapper and
# -D warnings do not apply to it.
unset RUSTC_WORKSPACE_WRAPPER RUSTFLAGS
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build 2>&1 | tail -1
for t in "${targets[@]}"; do
    corpus="$(mktemp -d)"
    cp -r "seeds/$t/." "$corpus/"
    echo "== fuzz $t for ${secs}s [$(date +%T)]"
    # -timeout: one input may take at most 10 s (a template's step budget ends far sooner);
    # -rss_limit_mb: the metadata and file bounds keep every input far below it.
    log="$corpus.log"
    status=0
    cargo +nightly fuzz run "$t" "$corpus" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|SUMMARY|panicked|Test unit written" "$log" || true
    [ "$status" -eq 0 ] || tail -40 "$log"
    rm -rf "$corpus" "$log"
    [ "$status" -eq 0 ] || { echo "fuzz target $t failed (see fuzz/artifacts/$t)"; exit 1; }
done
