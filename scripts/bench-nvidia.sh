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
    if ! ldconfig -p | grep -q libvulkan.so.1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
    export XDG_RUNTIME_DIR=/tmp
    local out="${OUT:-bench-results}"
    mkdir -p "$out"
    # One failed step is recorded and the rest still run: the GPU call is not repeatable at will.
    bench() {
        "$bin" bench "$@" --json | tee -a "$out/bench.jsonl" || echo "FAILED: bench $*" | tee -a "$out/failures.txt"
    }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
    # Correctness of the variants only a GPU runs, before their speed.
    for t in ops model; do
        local exe=".gl/test-$t"
        [ -x "$exe" ] || continue
        "$exe" --test-threads=1 coop_matrix int8 2>&1 | tee -a "$out/tests.txt" \
            || echo "FAILED: test-$t" | tee -a "$out/failures.txt"
    done
    # The issue's sizes; BENCH_SMOKE=1 runs the same steps on the tiny model (256 positions).
    local shape=llama3-8b prompt=512 gen=128 keys=640,2048,8192 long=4096 long_gen=64
    if [ "${BENCH_SMOKE:-}" = 1 ]; then
        shape=tiny prompt=64 gen=16 keys=64,128,192 long=192 long_gen=8
    fi
    # Both RMSNorm placements (BENCHMARKS.md, issue 6, change 10): folded is the default, as fast
    # as separate on lavapipe and 64 dispatches fewer per 8B token; this measures what that buys
    # on a GPU. The first run of each mix writes the synthetic model to a GGUF file (for the time
    # to the first token); the others load that file.
    for mix in q4_k_m q4_0; do
        local model="$shape:$mix"
        local gguf="/tmp/$shape-$mix.gguf"
        bench --synthetic "$model" --file "$gguf" --norms separate --prompt-tokens "$prompt" \
            --gen-tokens "$gen" --attention-keys "$keys"
        bench --model "$gguf" --norms folded --prompt-tokens "$prompt" --gen-tokens "$gen" \
            --attention-keys "$keys"
        # From the file just written:
        if [ "$mix" = q4_k_m ]; then
            # decoding deep into a long conversation (split attention, BENCHMARKS.md issue 6,
            # change 6);
            bench --model "$gguf" --prompt-tokens "$long" --gen-tokens "$long_gen"
            # each decode step recorded once its token is known, not while the GPU runs the
            # step before (change 18: recording ahead is the default);
            bench --model "$gguf" --no-record-ahead --prompt-tokens 16 --gen-tokens "$gen"
            # the decode products' reduction through workgroup memory instead of subgroupAdd
            # (change 11: subgroups are used wherever the adapter has them);
            bench --model "$gguf" --no-subgroups --prompt-tokens 16 --gen-tokens "$gen"
            # the other prefill register tiles (change 4): 4x8 is the default only because it
            # was the best on lavapipe;
            for tile in 2x8 4x4 8x8 4x16; do
                bench --model "$gguf" --prefill-tile "$tile" --prompt-tokens "$prompt" --gen-tokens 8
            done
        fi
        # int8 activations in the matrix products (change 15: packed integer dot products, off by
        # default until this shows they pay), prefill and decode;
        bench --model "$gguf" --int8-dot --prompt-tokens "$prompt" --gen-tokens "$gen"
        # prefill on cooperative matrices (change 17: tensor cores through wgpu's experimental
        # feature, off by default until this shows they pay).
        bench --model "$gguf" --coop-matrix --prompt-tokens "$prompt" --gen-tokens 8
        # the whole prompt in one submission (batches of 64 are the default): 8× the workgroups
        # per prefill dispatch, which the 1024-row k and v products need to fill the GPU.
        bench --model "$gguf" --max-batch "$prompt" --prompt-tokens "$prompt" --gen-tokens 8
        bench --model "$gguf" --max-batch "$prompt" --coop-matrix --prompt-tokens "$prompt" --gen-tokens 8
        # the other matvec workgroup shapes (change 7): 32 rows is the default, unmeasured;
        # fewer rows give the 4096-row matrices more workgroups.
        for rows in 16 8 64; do
            bench --model "$gguf" --matvec-rows "$rows" --prompt-tokens 16 --gen-tokens "$gen"
        done
        rm -f "$gguf"
    done
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
