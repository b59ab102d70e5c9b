#!/usr/bin/env bash
# Installs what building and testing the browser app needs, from package registries only (trunk
# would otherwise download wasm-bindgen and wasm-opt from GitHub):
#   - trunk 0.21.14 and wasm-bindgen-cli at Cargo.lock's wasm-bindgen version (crates.io);
#   - wasm-opt (npm binaryen@132; Debian's binaryen 108 makes pages that fail to start) and
#     playwright-core (drives Chromium in the end-to-end test) into target/web-tools (npm).
# Chromium itself comes from apt: apt-get install -y chromium chromium-driver.
# Prints the PATH to use: eval "$(scripts/install-web-tools.sh)"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/web-tools"
wbg=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' "$ROOT/Cargo.lock")
have_version() { command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"; }
# trunk's own release profile links with fat LTO in one codegen unit: minutes of a cold CI run
# for a tool whose work is running cargo and wasm-bindgen. Built without them.
have_version trunk 0.21.14 || CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install --locked trunk --version 0.21.14 >&2
# Without --locked: its lock file pins a crate version the registry no longer serves.
have_version wasm-bindgen "$wbg" || cargo install wasm-bindgen-cli --version "$wbg" >&2
if ! [ -x "$TOOLS/node_modules/.bin/wasm-opt" ] || ! [ -d "$TOOLS/node_modules/playwright-core" ]; then
    mkdir -p "$TOOLS"
    (cd "$TOOLS" && npm install --no-audit --no-fund --silent binaryen@132 playwright-core@1.65.1 >&2)
fi
echo "export PATH=\"$TOOLS/node_modules/.bin:\$HOME/.cargo/bin:\$PATH\" PLAYWRIGHT_CORE=\"$TOOLS/node_modules/playwright-core\""
