#!/usr/bin/env bash
# `carebot bench` on a Linux machine with an NVIDIA GPU, in one go.
#
#   scripts/bench-nvidia.sh prepare   # here (Debian, x86-64): release build + Vulkan loader debs into .gl/
#   scripts/bench-nvidia.sh run       # there, from the repo root with .gl/ brought along
#   BENCH_SMOKE=1 scripts/bench-nvidia.sh run   # here: every step on the tiny model (≈1 min on
#                                               # lavapipe), so the one GPU call is not spent on a typo
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
    # The kernel tests of the GPU-only variants (cooperative matrices at 16×16, int8 activations
    # on real packed dot products), run there before the benchmarks.
    cargo test --release -p carebot-gpu --test ops --test model --no-run --message-format=json \
        | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m["target"]["name"] in ("ops", "model"):
        print(m["target"]["name"], m["executable"])' \
        | while read -r name exe; do cp "$exe" ".gl/test-$name"; done
    # The device call carries at most 64 MiB: without their line tables the binaries are ≈ 27 MB.
    strip .gl/carebot .gl/test-*
    du -sh .gl
    echo "ready: carry .gl to the GPU machine and run: scripts/bench-nvidia.sh run"
}

run() {
    local bin=.gl/carebot
    # The smoke run takes this machine's build where .gl's is missing or older (not yet prepared).
    if [ "${BENCH_SMOKE:-}" = 1 ] && { [ ! -x "$bin" ] || [ target/release/carebot -nt "$bin" ]; }; then
        bin=target/release/carebot
    fi
    [ -x "$bin" ] || { echo "no $bin: run 'scripts/bench-nvidia.sh prepare' first" >&2; exit 1; }
    # Always unpacked (a bare machine may have a libvulkan.so.1 but no glvnd, which the NVIDIA
    # driver needs); not on the smoke run, which uses this machine's own.
    if [ "${BENCH_SMOKE:-}" != 1 ]; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    # Both names: VK_DRIVER_FILES for loaders from 1.3.234 on, VK_ICD_FILENAMES for older ones.
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
    export XDG_RUNTIME_DIR=/tmp
    local out="${OUT:-bench-results}"
    mkdir -p "$out"
    # Every step has its own time limit, and writes its line as soon as it ends: a device call
    # ends at 600 s, and what is in $out then still comes back. One failed or hung step is
    # recorded and the rest still run.
    bench() {
        local limit=$1
        shift
        timeout -k 5 "$limit" "$bin" bench "$@" --json | tee -a "$out/bench.jsonl" \
            || echo "FAILED or timed out ($limit s): bench $*" | tee -a "$out/failures.txt"
        sync
    }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
    # The issue's sizes; BENCH_SMOKE=1 runs the same steps on the tiny model (256 positions).
    local shape=llama3-8b prompt=512 gen=128 keys=640,2048,8192 long=4096 long_gen=64
    if [ "${BENCH_SMOKE:-}" = 1 ]; then
        shape=tiny prompt=64 gen=16 keys=64,128,192 long=192 long_gen=8
    fi
    # First the headline: 8B Q4_K_M prefill and decode with the default kernels, and the
    # device's read bandwidth (every bench line measures it). This run also writes the model file
    # the later steps load.
    local gguf="/tmp/$shape-q4_k_m.gguf"
    bench 240 --synthetic "$shape:q4_k_m" --file "$gguf" --prompt-tokens "$prompt" --gen-tokens "$gen" \
        --attention-keys "$keys"
    # Correctness of the variants only a GPU runs, before their speed.
    for t in ops model; do
        local exe=".gl/test-$t"
        [ -x "$exe" ] || continue
        timeout -k 5 120 "$exe" --test-threads=1 coop_matrix int8 2>&1 | tee -a "$out/tests.txt" \
            || echo "FAILED or timed out: test-$t" | tee -a "$out/failures.txt"
    done
    # Then the experiments, most telling first.
    for mix in q4_k_m q4_0; do
        gguf="/tmp/$shape-$mix.gguf"
        if [ "$mix" = q4_0 ]; then
            bench 240 --synthetic "$shape:$mix" --file "$gguf" --prompt-tokens "$prompt" --gen-tokens "$gen" \
                --attention-keys "$keys"
        fi
        # prefill on cooperative matrices (change 17: tensor cores through wgpu's experimental
        # feature, off by default until this shows they pay), alone and with the whole prompt in
        # one submission (batches of 64 are the default: 8× the workgroups per dispatch);
        bench 90 --model "$gguf" --coop-matrix --prompt-tokens "$prompt" --gen-tokens 8
        bench 90 --model "$gguf" --max-batch "$prompt" --prompt-tokens "$prompt" --gen-tokens 8
        bench 90 --model "$gguf" --max-batch "$prompt" --coop-matrix --prompt-tokens "$prompt" --gen-tokens 8
        # int8 activations in the matrix products (change 15: packed integer dot products, off by
        # default until this shows they pay), prefill and decode;
        bench 120 --model "$gguf" --int8-dot --prompt-tokens "$prompt" --gen-tokens "$gen"
        if [ "$mix" = q4_k_m ]; then
            # decoding deep into a long conversation (split attention, BENCHMARKS.md issue 6,
            # change 6);
            bench 120 --model "$gguf" --prompt-tokens "$long" --gen-tokens "$long_gen"
            # the RMSNorms separate from the products (folded is the default, issue 6, change 10);
            bench 90 --model "$gguf" --norms separate --prompt-tokens "$prompt" --gen-tokens "$gen"
            # each decode step recorded once its token is known, not while the GPU runs the
            # step before (change 18: recording ahead is the default);
            bench 60 --model "$gguf" --no-record-ahead --prompt-tokens 16 --gen-tokens "$gen"
            # the decode products' reduction through workgroup memory instead of subgroupAdd
            # (change 11: subgroups are used wherever the adapter has them);
            bench 60 --model "$gguf" --no-subgroups --prompt-tokens 16 --gen-tokens "$gen"
            # the other prefill register tiles (change 4): 4x8 is the default only because it
            # was the best on lavapipe;
            for tile in 2x8 4x4 8x8 4x16; do
                bench 60 --model "$gguf" --prefill-tile "$tile" --prompt-tokens "$prompt" --gen-tokens 8
            done
        fi
        # the other matvec workgroup shapes (change 7): 32 rows is the default, unmeasured;
        # fewer rows give the 4096-row matrices more workgroups.
        for rows in 16 8 64; do
            bench 60 --model "$gguf" --matvec-rows "$rows" --prompt-tokens 16 --gen-tokens "$gen"
        done
        rm -f "$gguf"
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
