#!/usr/bin/env bash
# Installs what building and testing the browser app needs, from package registries only (trunk
# would otherwise download wasm-bindgen and wasm-opt from GitHub):
#   - trunk 0.21.14 and wasm-bindgen-cli at Cargo.lock's wasm-bindgen version (crates.io);
#   - wasm-opt (npm binaryen@132; Debian's binaryen 108 makes pages that fail to start) and
#     puppeteer-core (drives Chromium and Firefox in the end-to-end tests) into target/web-tools (npm).
#   - geckodriver (crates.io): drives Firefox for the wasm-bindgen kernel tests.
# The browsers come from apt: apt-get install -y chromium chromium-driver firefox-esr.
# Prints the PATH to use: eval "$(scripts/install-web-tools.sh)"
# `scripts/install-web-tools.sh serve` installs only what building and serving the page needs
# (trunk, wasm-bindgen-cli, wasm-opt).
set -euo pipefail
what="${1:-test}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/web-tools"
wbg=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print }' "$ROOT/Cargo.lock")
have_version() { command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"; }
# trunk's own release profile links with fat LTO in one codegen unit: minutes of a cold CI run
# for a tool whose work is running cargo and wasm-bindgen. Built without them, and without its
# default features: TLS (for downloading tools from GitHub, which we never want) and the update
# check (a request to crates.io at every start).
have_version trunk 0.21.14 || CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo install --locked --no-default-features trunk --version 0.21.14 >&2
# Without --locked: its lock file pins a crate version the registry no longer serves.
have_version wasm-bindgen "$wbg" || cargo install wasm-bindgen-cli --version "$wbg" >&2
if [ "$what" = serve ]; then
    if ! [ -x "$TOOLS/node_modules/.bin/wasm-opt" ]; then
        mkdir -p "$TOOLS"
        (cd "$TOOLS" && npm install --no-audit --no-fund --silent binaryen@132 >&2)
    fi
else
    have_version geckodriver 0.37.1 || cargo install --locked geckodriver --version 0.37.1 >&2
    if ! [ -x "$TOOLS/node_modules/.bin/wasm-opt" ] || ! [ -d "$TOOLS/node_modules/puppeteer-core" ]; then
        mkdir -p "$TOOLS"
        (cd "$TOOLS" && npm install --no-audit --no-fund --silent binaryen@132 puppeteer-core@25.19.0 >&2)
    fi
fi
echo "export PATH=\"$TOOLS/node_modules/.bin:\$HOME/.cargo/bin:\$PATH\" PUPPETEER_CORE=\"$TOOLS/node_modules/puppeteer-core\""
