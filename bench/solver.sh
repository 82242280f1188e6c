#!/usr/bin/env bash
# Scheduler overhead of the generic solver on a synthetic graph of N no-op vertices
# (default 1000), cold and fully cached (cache records in a redb file on disk).
#   bench/solver.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo run --release -q -p solver --example schedbench -- "${1:-1000}"
# A fully cached re-solve of a real 50-vertex graph (runc, overlayfs, local registry).
cargo run --release -q -p ops --example cachedbench
