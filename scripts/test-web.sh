#!/usr/bin/env bash
# The browser tests: the GPU kernel tests in headless Chromium (wasm-bindgen-test), then the app
# end to end (trunk build --release, a local server, headless Chromium; screenshots land in
# target/e2e/): chat with GGUF models, then the zero-install preparation from a local "hub". Needs chromium + chromium-driver (apt) and scripts/install-web-tools.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/install-web-tools.sh)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
eval "$(scripts/fetch-test-data.sh)"

echo "== GPU kernels in headless Chromium"
scripts/test-web-gpu.sh

echo "== app end to end"
(cd web && trunk build --release)
ls -l dist/*.wasm
for f in dist/*.wasm; do echo "$f: $(stat -c %s "$f") bytes, $(gzip -9 -c "$f" | wc -c) gzipped"; done
# --workspace, as scripts/test.sh builds: with -p, cargo resolves features for that crate alone and
# rebuilds shared dependencies.
cargo build --release --workspace --bin carebot --examples
mkdir -p target/e2e
target/release/examples/synthetic_gguf target/e2e/tiny.gguf q4_k
target/release/examples/synthetic_gguf target/e2e/tiny-f16.gguf f16
CAREBOT_E2E_MODEL=target/e2e/tiny.gguf CAREBOT_BIN=target/release/carebot node tests/e2e/chat.mjs

echo "== zero-install: a tiny bf16 checkpoint prepared from a local hub (a shard past 4 GiB, sparse)"
rm -rf target/e2e/hub
target/release/examples/hf_checkpoint target/e2e/hub/test/tiny-carebot $(((4 << 30) + (8 << 20)))
target/release/carebot convert --hf target/e2e/hub/test/tiny-carebot --out target/e2e/hub-cli.gguf --quant q4_k_m
CAREBOT_E2E_HUB=target/e2e/hub/test/tiny-carebot CAREBOT_E2E_HUB_GGUF=target/e2e/hub-cli.gguf \
    CAREBOT_BIN=target/release/carebot node tests/e2e/prepare.mjs
rm -rf target/e2e/hub

echo "== real size: a 4.9 GB Llama-3-8B Q4_K_M GGUF, downloaded, cached and picked from disk"
# Made for this run (random weights, the real header) and deleted after, pass or fail.
trap 'rm -f target/e2e/realsize.gguf' EXIT
target/release/examples/converted_gguf target/e2e/realsize.gguf llama3-8b
# Loading only: an 8B answer would take ≈ 8 min on lavapipe for the reference and far longer on
# SwiftShader (BENCHMARKS.md); CAREBOT_E2E_BIG_TOKENS=2 runs the answers too.
CAREBOT_E2E_BIG=target/e2e/realsize.gguf CAREBOT_E2E_BIG_TOKENS="${CAREBOT_E2E_BIG_TOKENS:-0}" CAREBOT_BIN=target/release/carebot \
    node tests/e2e/realsize.mjs
