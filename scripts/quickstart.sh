#!/usr/bin/env bash
# The main job, end to end on a fresh Debian machine:
#   1. installs the packages it needs and builds buildkit-rs (release),
#   2. makes a busybox base image and pushes it to a private registry on 127.0.0.1,
#   3. builds examples/hello/Dockerfile (multi-stage: RUN, COPY, COPY --from) with
#      scripts/buildctl-daemonless.sh, which starts a private buildkitd for the one
#      buildctl command and stops it after; the result goes to a local directory,
#   4. builds it again: every step comes from the cache and no context file is sent.
# Needs root (mounts and containers). The daemon's state (its cache) is kept in
# /var/lib/buildkit-daemonless between runs. What is not there yet: docs/unsupported.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --workspace --bins
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

export BUILDKITD="$BIN/buildkitd" BUILDCTL="$BIN/buildctl"
build() {
  scripts/buildctl-daemonless.sh build --frontend dockerfile.v0 \
    --local context=examples/hello --local dockerfile=examples/hello \
    --opt build-arg:BASE="$ref" \
    --output type=local,dest="$work/out" --progress plain
}
echo "== building examples/hello/Dockerfile on $ref (daemonless)"
build
echo "== the result, in $work/out"
ls -l "$work/out"
cat "$work/out/hello.txt"
(cd "$work/out" && sha256sum -c hello.txt.sha256)
echo "== again: every step comes from the cache"
build 2>&1 | tee "$work/second.log"
grep -q "CACHED" "$work/second.log"
echo "quickstart: OK"
