#!/usr/bin/env bash
# Builds CareBot Web (release) and serves it at http://127.0.0.1:8080/, installing what that needs
# first (scripts/install-deps.sh serve). Arguments go to `trunk serve` (e.g. --port 9000,
# --address 0.0.0.0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools_env="$(scripts/install-deps.sh serve)"
eval "$tools_env"
cat <<'TEXT'

CareBot Web: when the build below is done, open http://127.0.0.1:8080/ in Chrome or Edge 113+
(Safari 26+; Firefox with WebGPU: see README.md). The page then
  - with no parameters: prepares CareBot once from its official repository on the Hugging Face hub
    (a ≈ 16 GB bf16 download, quantized to a 4.9 GB model on your GPU; needs ≈ 5.5 GB of GPU memory
    and ≈ 5 GB of browser storage) and keeps it for later visits, also offline;
  - with ?model=<URL of a GGUF>: downloads that model (the server must allow Range requests);
  - or takes a .gguf you drop on it. Try it small: scripts/fetch-test-data.sh puts SmolLM2-135M
    (a 0.1 GB GGUF) in target/test-data/smollm/; drop that file on the page.
Nothing you type leaves the browser.

TEXT
cd web
# No autoreload: this serves the app to use, not to edit (`cd web && trunk serve` does that).
exec trunk serve --release --no-autoreload "$@"
