#!/usr/bin/env bash
# The cooperative-matrix kernel tests on a lavapipe that has cooperative matrices. Debian 12's
# Mesa (22.3) has none; Mesa 26's lavapipe multiplies 8×8 f16 ones, but needs Debian 13's
# libraries, so it lives in a Debian 13 root under $ROOT, where the test binaries built here run.
#
#   scripts/test-coop.sh setup   # once, as root: debootstrap + mesa-vulkan-drivers from trixie-backports
#   scripts/test-coop.sh run     # builds the GPU test binaries, runs their cooperative-matrix tests there,
#                                # and validates the kernel's SPIR-V at both sides (16×16 is what GPUs
#                                # run; no local driver does) with Debian 13's spirv-val
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="${CAREBOT_COOP_ROOT:-/opt/carebot-trixie}"
MIRROR=http://deb.debian.org/debian

setup() {
    [ -x "$ROOT/usr/bin/vulkaninfo" ] && [ -x "$ROOT/usr/bin/spirv-val" ] && return
    if [ -d "$ROOT" ]; then
        chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spirv-tools >/dev/null
        return
    fi
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >/dev/null
    echo "deb $MIRROR trixie-backports main" > "$ROOT/etc/apt/sources.list.d/backports.list"
    chroot "$ROOT" apt-get update -qq
    chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t trixie-backports mesa-vulkan-drivers libvulkan1 vulkan-tools spirv-tools >/dev/null
}

run() {
    [ -d "$ROOT" ] || { echo "no $ROOT: run 'scripts/test-coop.sh setup' first (as root)" >&2; exit 1; }
    mkdir -p "$ROOT/tmp/carebot"
    # --workspace: the binaries scripts/test.sh built (-p would resolve features anew and rebuild).
    cargo test --release --workspace --test ops --test model --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable"):
        print(m["target"]["name"], m["executable"])' \
        | while read -r name exe; do cp "$exe" "$ROOT/tmp/carebot/$name"; done
    local status=0 log="$ROOT/tmp/carebot/log"
    for t in ops model; do
        chroot "$ROOT" env XDG_RUNTIME_DIR=/tmp sh -c "cd /tmp/carebot && ./$t coop_matrix --nocapture" 2>&1 \
            | tee "$log" || status=1
        # The tests skip (and pass) where the adapter has no cooperative matrices: not here.
        if grep -q 'untested here' "$log" || ! grep -q '^test result: ok. [1-9]' "$log"; then
            echo "FAILED: the cooperative-matrix tests of $t failed or did not run on cooperative matrices" >&2
            status=1
        fi
    done
    rm -rf "$ROOT/tmp/carebot/spv" && mkdir -p "$ROOT/tmp/carebot/spv"
    CAREBOT_SPIRV_OUT="$ROOT/tmp/carebot/spv" cargo test --release -q --workspace --lib cooperative_matrix_kernel \
        || status=1
    # shellcheck disable=SC2016
    chroot "$ROOT" sh -c 'n=0; for f in /tmp/carebot/spv/*.spv; do
            spirv-val --target-env vulkan1.3 "$f" || { echo "FAILED: spirv-val $f"; exit 1; }; n=$((n + 1))
        done; [ "$n" -gt 0 ] && echo "spirv-val: the $n SPIR-V modules of the cooperative-matrix kernel are valid"' \
        || status=1
    return "$status"
}

case "${1:-}" in
    setup) setup ;;
    run) run ;;
    *) echo "usage: $0 setup|run" >&2; exit 2 ;;
esac
