#!/usr/bin/env bash
# The main job, end to end on a fresh Debian machine:
#   1. installs the packages it needs and builds buildkit-rs (release),
#   2. makes a busybox base image and pushes it to a private registry on 127.0.0.1,
#   3. builds an LLB graph on that image with the Rust builder and prints it with
#      `buildctl debug dump-llb` (JSON lines) and as a Graphviz graph.
# What is not there yet (daemon, `buildctl build`): see docs/unsupported.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --workspace --bins --examples
BIN="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
registry_pid=""
cleanup() {
  local rc=$?
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
echo "== the same graph in Graphviz form"
"$BIN/buildctl" debug dump-llb --dot < "$work/hello.llb"
echo "quickstart: OK"
