#!/usr/bin/env bash
# The main job, end to end on a fresh Debian machine:
#   1. installs the packages it needs and builds buildkit-rs (release),
#   2. makes a busybox base image and pushes it to a private registry on 127.0.0.1,
#   3. builds an LLB graph on that image with the Rust builder and prints it with
#      `buildctl debug dump-llb` (JSON lines),
#   4. starts a private buildkitd (own socket and root) and builds that graph with
#      `buildctl build`: pull, unpack, run under runc, cache; then builds it again (all
#      cached) and stops the daemon.
# Needs root (mounts and containers). What is not there yet (Dockerfiles, outputs):
# see docs/unsupported.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --workspace --bins --examples
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
registry_pid=""
daemon_pid=""
cleanup() {
  local rc=$?
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.2
done

ref="127.0.0.1:$port/busybox:latest"
echo "== making a busybox image and pushing it to $ref"
"$BIN/mkbusybox" --oci "$work/busybox-oci" --push "$ref"

echo "== LLB for an image build on $ref, as buildctl debug dump-llb prints it"
"$BIN/examples/hello" "$ref" > "$work/hello.llb"
"$BIN/buildctl" debug dump-llb < "$work/hello.llb"

echo "== building it with a private buildkitd"
"$BIN/buildkitd" --root "$work/buildkit" --addr "unix://$work/buildkitd.sock" 2>"$work/buildkitd.log" &
daemon_pid=$!
addr="unix://$work/buildkitd.sock"
for _ in $(seq 100); do
  "$BIN/buildctl" --addr "$addr" debug workers >/dev/null 2>&1 && break
  sleep 0.2
done
"$BIN/buildctl" --addr "$addr" debug workers
"$BIN/buildctl" --addr "$addr" build --progress plain < "$work/hello.llb"
echo "== again: every step comes from the cache"
"$BIN/buildctl" --addr "$addr" build --progress plain < "$work/hello.llb"
kill "$daemon_pid"
wait "$daemon_pid"
daemon_pid=""
echo "quickstart: OK"
