#!/usr/bin/env bash
# Pull of an image of SIZE MiB (default 100) from a local registry into a fresh content
# store, three runs, next to `skopeo copy` of the same image (the reference point).
#   bench/pull.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo run --release -q -p registry --example pullbench -- "${1:-100}"
