#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real registry,
# real files). Installs missing Debian packages first. Run as root for the privileged
# tests (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
