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
cargo build --release -p carebot-cli
mkdir -p target/e2e
cargo run --release -q -p carebot-model --example synthetic_gguf -- target/e2e/tiny.gguf q4_k
cargo run --release -q -p carebot-model --example synthetic_gguf -- target/e2e/tiny-f16.gguf f16
CAREBOT_E2E_MODEL=target/e2e/tiny.gguf CAREBOT_BIN=target/release/carebot node tests/e2e/chat.mjs

echo "== zero-install: a tiny bf16 checkpoint prepared from a local hub"
rm -rf target/e2e/hub
cargo run --release -q -p carebot-model --example hf_checkpoint -- target/e2e/hub/test/tiny-carebot
target/release/carebot convert --hf target/e2e/hub/test/tiny-carebot --out target/e2e/hub-cli.gguf --quant q4_k_m
CAREBOT_E2E_HUB=target/e2e/hub/test/tiny-carebot CAREBOT_E2E_HUB_GGUF=target/e2e/hub-cli.gguf \
    CAREBOT_BIN=target/release/carebot node tests/e2e/prepare.mjs
