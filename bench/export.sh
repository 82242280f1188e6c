#!/usr/bin/env bash
# Image export of a large result layer with the real binaries (release build): a Dockerfile
# `FROM scratch` + `COPY big-tree /` whose tree is SIZE MiB (default 1024) made by the
# archive crate's generator (bench/layer.sh's tree: small and large files, random or
# text-like), exported by a private buildkitd as
#
#   gzip (fresh)                 type=image, the layer diffed and compressed (level 6)
#   gzip (remembered blob)       the same again: the blob made before is reused
#   zstd, uncompressed (fresh)   compression=zstd (level 3), compression=uncompressed
#   oci tarball (remembered)     type=oci to stdout (discarded): the blobs streamed to
#                                the client over the session
#   push (remembered blob)       type=image,push=true to a registry on 127.0.0.1; the
#                                daemon's peak RSS during the push is printed
#
# next to the floor on the same tree and machine: `tar -c` alone, then `gzip -1`,
# `gzip -6`, `pigz -6` (if installed) and `zstd -3` of that tar. Times are wall clock of
# `buildctl build` (the result is built and cached first, so an export's time is the
# export: the cached build alone is printed as "cached build, no export"), or of the
# tool, with the CPU time the daemon (or the tool) used meanwhile. Everything lives on a
# tmpfs (needs root): the tree, the daemon root, the registry.
#
#   bench/export.sh [SIZE_MIB]
# knobs: WORK (default /var/tmp/exportbench), CARGO_TARGET_DIR, KEEP_LOGS=1 (copy the
#        logs to /var/tmp/exportbench-logs before the tmpfs goes)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB="${1:-1024}"
WORK="${WORK:-/var/tmp/exportbench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/bk-target}"

cargo build --release -q -p buildkitd -p buildctl
cargo build --release -q -p archive --example layerbench
BIN="$CARGO_TARGET_DIR/release"

registry_pid=""
daemon_pid=""
mkdir -p "$WORK"
# Tree, daemon root and registry storage: about 7 times SIZE (tree, snapshot, three
# compressions, the registry's copy, the floor's tar).
mount -t tmpfs -o size=$((SIZE_MIB * 8 + 1024))m exportbench "$WORK"
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  if [ "${KEEP_LOGS:-0}" = 1 ]; then
    mkdir -p /var/tmp/exportbench-logs
    cp "$WORK"/*.log /var/tmp/exportbench-logs/ 2>/dev/null || true
  fi
  umount "$WORK"
  rmdir "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$port}
YML
/usr/bin/docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.2; done

ctx="$WORK/ctx"
mkdir -p "$ctx"
"$BIN/examples/layerbench" gen "$ctx/big-tree" "$SIZE_MIB"
printf 'FROM scratch\nCOPY big-tree /\n' > "$ctx/Dockerfile"
TREE_BYTES=$(du -sb --apparent-size "$ctx/big-tree" | cut -f1)
sync

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
# report NAME SECONDS [CPU_SECONDS] [SIZE_BYTES]: wall time, MiB/s of tree content, CPU
# time (the cores a step kept busy, and what it costs on a loaded machine), output size
report() {
  local rate cpu="" size=""
  rate=$(awk -v s="$2" -v b="$TREE_BYTES" 'BEGIN {printf "%.1f", b / 1048576 / s}')
  if [ -n "${3:-}" ]; then cpu=$(printf '%6.2f s cpu' "$3"); fi
  if [ -n "${4:-}" ]; then size=$(awk -v b="$4" 'BEGIN {printf "%.0f MiB", b / 1048576}'); fi
  printf '   %-36s %7.2f s %7s MiB/s  %13s  %s\n' "$1" "$2" "$rate" "$cpu" "$size"
}
# CPU seconds (user + system) the daemon has used so far.
daemon_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$daemon_pid/stat"; }
# build [--output SPEC...]: one buildctl build of the context, prints seconds; its plain
# progress is appended to $WORK/progress.log
addr="unix://$WORK/buildkitd.sock"
build() {
  local t0 t1 c0 c1
  t0=$(now); c0=$(daemon_cpu)
  "$BIN/buildctl" --addr "$addr" build --frontend dockerfile.v0 \
    --local context="$ctx" --local dockerfile="$ctx" --progress plain "$@" \
    2>>"$WORK/progress.log" >/dev/null
  t1=$(now); c1=$(daemon_cpu)
  echo "$(secs "$t0" "$t1") $(secs "$c0" "$c1")"
}
# step NAME [--output SPEC]: one build, reported (with the layer size when SIZED=1)
step() {
  local name=$1 r
  shift
  read -r -a r <<<"$(build "$@")"
  if [ "${SIZED:-0}" = 1 ]; then
    report "$name" "${r[0]}" "${r[1]}" "$(layer_size)"
  else
    report "$name" "${r[0]}" "${r[1]}"
  fi
}
# The size of the single layer blob of the image the last build exported.
layer_size() {
  local manifest
  manifest=$(grep -o 'exporting manifest sha256:[0-9a-f]*' "$WORK/progress.log" | tail -1 | sed 's/.*sha256://')
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["size"])' \
    "$WORK/root/content/blobs/sha256/$manifest"
}

echo "tree: $(find "$ctx/big-tree" -type f | wc -l) files, $((TREE_BYTES / 1048576)) MiB on tmpfs; $(nproc) cores; $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"

"$BIN/buildkitd" --root "$WORK/root" --addr "$addr" 2>"$WORK/buildkitd.log" &
daemon_pid=$!
for _ in $(seq 200); do "$BIN/buildctl" --addr "$addr" debug workers >/dev/null 2>&1 && break; sleep 0.1; done

echo "== ours (buildkitd, one export each; cpu: the daemon's)"
step "build (context sync + COPY)"
step "cached build, no export"
SIZED=1 step "image, gzip -6 (fresh)" --output type=image,name=bench/export:gzip
step "image, gzip (remembered blob)" --output type=image,name=bench/export:gzip
SIZED=1 step "image, zstd -3 (fresh)" --output type=image,name=bench/export:zstd,compression=zstd
SIZED=1 step "image, uncompressed (fresh)" --output type=image,name=bench/export:raw,compression=uncompressed
step "oci tarball to client (remembered)" --output type=oci,dest=-
# Peak RSS of the push alone: writing 5 to clear_refs resets the process's VmHWM.
echo 5 > "/proc/$daemon_pid/clear_refs"
SIZED=1 step "push, gzip (remembered blob)" --output "type=image,name=127.0.0.1:$port/bench/export:gzip,push=true"
peak=$(awk '/VmHWM/ {print $2}' "/proc/$daemon_pid/status")
echo "   buildkitd peak RSS during the push: $((peak / 1024)) MiB"
peak=$(awk '/VmRSS/ {print $2}' "/proc/$daemon_pid/status")
echo "   buildkitd RSS after the push: $((peak / 1024)) MiB"
kill "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=""

echo "== floor (the same tree, as one tar)"
tarball="$WORK/tree.tar"
rm -rf "$WORK/root" "$WORK/registry"
# floor NAME CMD...: CMD reads the tar on stdin (or makes it, for tar -c)
floor() {
  local name=$1 r
  shift
  /usr/bin/time -f "%e %U %S" -o "$WORK/time.out" "$@" > "$WORK/floor.out"
  read -r -a r < "$WORK/time.out"
  report "$name" "${r[0]}" "$(awk -v u="${r[1]}" -v s="${r[2]}" 'BEGIN {print u + s}')" "$(stat -c %s "$WORK/floor.out")"
}
floor "tar -c" tar -C "$ctx/big-tree" -cf - .
mv "$WORK/floor.out" "$tarball"
floor "gzip -1" gzip -1 -c "$tarball"
floor "gzip -6" gzip -6 -c "$tarball"
if command -v pigz >/dev/null; then
  floor "pigz -6 ($(nproc) threads)" pigz -6 -c "$tarball"
else
  echo "   pigz: not installed (apt-get install pigz)"
fi
floor "zstd -3 (one thread)" zstd -3 -q -c "$tarball"
rm -f "$WORK/floor.out"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine slows every step)"
