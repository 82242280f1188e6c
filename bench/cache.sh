#!/usr/bin/env bash
# Cache management at scale (release build, needs root): N cache records (default 10000,
# committed snapshots in chains of 10, one small file each, made through the worker's
# snapshotter), then
#   - in process (cache crate): list them with sizes computed, again with sizes
#     remembered, and prune PRUNE of them (default 1000) by filter;
#   - through the daemon: `buildctl du` (first and second run) and `buildctl prune
#     --filter description==bench-prune` on a second root filled the same way.
#   bench/cache.sh      knobs: N, PRUNE, WORK (default /var/tmp/cachebench), KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
N="${N:-10000}"
PRUNE="${PRUNE:-1000}"
WORK="${WORK:-/var/tmp/cachebench}"

cargo build --release -q -p buildkitd -p buildctl
cargo build --release -q -p cache --example cache_bench
BIN="$CARGO_TARGET_DIR/release"

rm -rf "$WORK"
mkdir -p "$WORK"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

echo "== in process: $N records, prune $PRUNE"
"$BIN/examples/cache_bench" "$WORK/a" "$N" "$PRUNE"

echo "== through buildkitd: $N records, prune $PRUNE"
"$BIN/examples/cache_bench" "$WORK/b" "$N" "$PRUNE" --fill-only
addr="unix://$WORK/buildkitd.sock"
# No automatic GC while measuring.
"$BIN/buildkitd" --root "$WORK/b" --addr "$addr" --oci-worker-gc=false 2>"$WORK/buildkitd.log" &
daemon_pid=$!
for _ in $(seq 200); do "$BIN/buildctl" --addr "$addr" debug workers >/dev/null 2>&1 && break; sleep 0.1; done
now() { date +%s.%N; }
t0=$(now); rows=$("$BIN/buildctl" --addr "$addr" du | wc -l); t1=$(now)
awk -v a="$t0" -v b="$t1" -v r="$rows" 'BEGIN {printf "   buildctl du (sizes computed): %d lines in %.2f s\n", r, b - a}'
t0=$(now); rows=$("$BIN/buildctl" --addr "$addr" du | wc -l); t1=$(now)
awk -v a="$t0" -v b="$t1" -v r="$rows" 'BEGIN {printf "   buildctl du (remembered):     %d lines in %.2f s\n", r, b - a}'
t0=$(now); rows=$("$BIN/buildctl" --addr "$addr" prune --filter description==bench-prune | wc -l); t1=$(now)
awk -v a="$t0" -v b="$t1" -v r="$rows" 'BEGIN {printf "   buildctl prune (filtered):    %d lines in %.2f s\n", r, b - a}'
