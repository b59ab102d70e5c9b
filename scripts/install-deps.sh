#!/usr/bin/env bash
# Installs what serving or testing CareBot Web needs on a Debian machine, from the registries only
# (Debian's packages, crates.io, npm, PyPI): what is there already is kept.
#   scripts/install-deps.sh serve   # build and serve the page: a C toolchain, Node and npm, the
#                                   # wasm32 target, trunk, wasm-bindgen-cli and wasm-opt
#   scripts/install-deps.sh test    # everything the tests need too: Mesa's software Vulkan,
#                                   # Chromium, ChromeDriver, Firefox ESR, pip, Mesa 26 for the
#                                   # cooperative-matrix kernels, clippy and rustfmt
# Debian packages are installed as root, or through sudo. Prints the PATH to use (as
# scripts/install-web-tools.sh does): eval "$(scripts/install-deps.sh serve)"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what="${1:-}"
[ "$what" = serve ] || [ "$what" = test ] || { echo "usage: $0 serve|test" >&2; exit 2; }

have() { command -v "$1" >/dev/null 2>&1; }
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif have sudo; then sudo "$@"
    else echo "error: installing Debian packages needs root (or sudo): $*" >&2; exit 1; fi
}
APT_UPDATED=
apt_install() {
    [ -n "$APT_UPDATED" ] || { as_root apt-get update -qq >&2; APT_UPDATED=1; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Rust comes from rustup (Debian's rustc is too old for this workspace: rust-version in Cargo.toml).
if ! have cargo || ! have rustup; then
    echo "error: CareBot needs Rust from rustup (https://rustup.rs), then run this again" >&2
    exit 1
fi
have cc || apt_install build-essential
# npm: wasm-opt (binaryen) for the page, the tokenizer test data and puppeteer for the tests.
have npm || apt_install nodejs npm
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown >&2

if [ "$what" = test ]; then
    have python3 || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    # GPU tests run on Mesa's software Vulkan driver (lavapipe) when there is no GPU.
    { [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && /sbin/ldconfig -p | grep -q libvulkan.so.1; } \
        || apt_install mesa-vulkan-drivers libvulkan1
    # Browser tests run in Debian's headless Chromium (WebGPU on SwiftShader) and Firefox ESR
    # (WebGPU on lavapipe).
    { [ -x /usr/bin/chromium ] && have chromedriver && [ -x /usr/bin/firefox-esr ]; } \
        || apt_install chromium chromium-driver firefox-esr
    # The cooperative-matrix kernels need a newer lavapipe, in a Debian 13 root (scripts/test-coop.sh).
    as_root scripts/test-coop.sh setup >&2
    rustup component add clippy rustfmt >&2
fi
scripts/install-web-tools.sh "$what"
