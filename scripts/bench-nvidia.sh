#!/usr/bin/env bash
# `carebot bench` on a Linux machine with an NVIDIA GPU, in one go.
#
#   scripts/bench-nvidia.sh prepare   # here (Debian, x86-64): release build + Vulkan loader debs into .gl/
#   scripts/bench-nvidia.sh run       # there, from the repo root with .gl/ brought along
#
# Images of GPU machines often lack the Vulkan loader and glvnd (without libglvnd0/libglx0 the
# NVIDIA Vulkan driver does not load and wgpu finds no adapter), so `prepare` downloads Debian's and
# `run` unpacks them before benchmarking. Results go to $OUT (or ./bench-results) as JSON lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

prepare() {
    cargo build --release -p carebot-cli
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
    mkdir -p .gl /tmp/amd64/partial
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    cp target/release/carebot .gl/
    echo "ready: carry .gl to the GPU machine and run: scripts/bench-nvidia.sh run"
}

run() {
    [ -x .gl/carebot ] || { echo "no .gl/carebot: run 'scripts/bench-nvidia.sh prepare' first" >&2; exit 1; }
    if ! ldconfig -p | grep -q libvulkan.so.1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
    export XDG_RUNTIME_DIR=/tmp
    local out="${OUT:-bench-results}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
    # Both RMSNorm placements (BENCHMARKS.md, issue 6, change 10): folded is the default, as fast
    # as separate on lavapipe and 64 dispatches fewer per 8B token; this measures what that buys
    # on a GPU. The first run of each mix writes the synthetic model to a GGUF file (for the time
    # to the first token); the others load that file.
    for model in llama3-8b:q4_k_m llama3-8b:q4_0; do
        local gguf="/tmp/${model/:/-}.gguf"
        .gl/carebot bench --synthetic "$model" --file "$gguf" --norms separate --prompt-tokens 512 --gen-tokens 128 \
            --attention-keys 640,2048,8192 --json | tee -a "$out/bench.jsonl"
        .gl/carebot bench --model "$gguf" --norms folded --prompt-tokens 512 --gen-tokens 128 \
            --attention-keys 640,2048,8192 --json | tee -a "$out/bench.jsonl"
        # From the file just written:
        if [ "$model" = llama3-8b:q4_k_m ]; then
            # decoding deep into a long conversation (split attention, BENCHMARKS.md issue 6,
            # change 6);
            .gl/carebot bench --model "$gguf" --prompt-tokens 4096 --gen-tokens 64 --json \
                | tee -a "$out/bench.jsonl"
            # the decode products' reduction through workgroup memory instead of subgroupAdd
            # (change 11: subgroups are used wherever the adapter has them);
            .gl/carebot bench --model "$gguf" --no-subgroups --prompt-tokens 16 --gen-tokens 128 --json \
                | tee -a "$out/bench.jsonl"
            # the other prefill register tiles (change 4): 4x8 is the default only because it
            # was the best on lavapipe;
            for tile in 2x8 4x4 8x8 4x16; do
                .gl/carebot bench --model "$gguf" --prefill-tile "$tile" --prompt-tokens 512 \
                    --gen-tokens 8 --json | tee -a "$out/bench.jsonl"
            done
        fi
        # the other matvec workgroup shapes (change 7): 32 rows is the default, unmeasured;
        # fewer rows give the 4096-row matrices more workgroups.
        for rows in 16 8 64; do
            .gl/carebot bench --model "$gguf" --matvec-rows "$rows" --prompt-tokens 16 \
                --gen-tokens 128 --json | tee -a "$out/bench.jsonl"
        done
        rm -f "$gguf"
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
