#!/usr/bin/env bash
# The project's test command: fetch the registry-hosted test data, then run every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/fetch-test-data.sh)"
cargo test --release --workspace "$@"
