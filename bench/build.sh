#!/usr/bin/env bash
# End-to-end Dockerfile builds with the real binaries (release build), a private
# buildkitd, a busybox base image in a registry on 127.0.0.1, runc and overlayfs:
#
#   small   cold build, no-op rebuild, one-file-changed rebuild of a multi-stage Dockerfile
#   large   a context of FILES small files (default 20000) + one BIG_MIB file (default
#           500), `COPY . /ctx/` to a `type=local` output: cold, no-op, one small file
#           changed; next to `tar -c | sha256sum` over the same context (the floor: reading
#           every byte once). Re-exports into the same dest are incremental; the bytes
#           the last one sent are printed.
#
# Times are wall clock of `buildctl build`, median of REPS (default 3) for the rebuilds.
# Prints the daemon's peak RSS at the end. Needs root.
#   bench/build.sh            # both workloads
#   WORKLOADS=small bench/build.sh
# knobs: FILES, BIG_MIB, REPS, WORK (default /var/tmp/buildbench), KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
FILES="${FILES:-20000}"
BIG_MIB="${BIG_MIB:-500}"
REPS="${REPS:-3}"
WORK="${WORK:-/var/tmp/buildbench}"
WORKLOADS="${WORKLOADS:-small large}"

cargo build --release -q -p buildkitd -p buildctl -p testkit --bins
BIN="$CARGO_TARGET_DIR/release"

rm -rf "$WORK"
mkdir -p "$WORK"
registry_pid=""
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
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
base="127.0.0.1:$port/busybox:latest"
"$BIN/mkbusybox" --push "$base" >/dev/null

addr="unix://$WORK/buildkitd.sock"
start_daemon() {
  rm -rf "$WORK/root"
  "$BIN/buildkitd" --root "$WORK/root" --addr "$addr" 2>"$WORK/buildkitd.log" &
  daemon_pid=$!
  for _ in $(seq 200); do "$BIN/buildctl" --addr "$addr" debug workers >/dev/null 2>&1 && return; sleep 0.1; done
  echo "buildkitd did not start" >&2; cat "$WORK/buildkitd.log" >&2; exit 1
}
stop_daemon() {
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$daemon_pid/status")
  echo "   buildkitd peak RSS: $((peak / 1024)) MiB"
  kill "$daemon_pid"; wait "$daemon_pid" || true; daemon_pid=""
}

now() { date +%s.%N; }
# build CTX OUT: one buildctl build, prints seconds; the plain progress of every build is
# appended to $WORK/progress.log (step times)
build() {
  local t0 t1
  t0=$(now)
  "$BIN/buildctl" --addr "$addr" build --frontend dockerfile.v0 \
    --local context="$1" --local dockerfile="$1" \
    --output "type=local,dest=$2" --progress plain 2>>"$WORK/progress.log"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
report() { printf '   %-28s %8.2f s\n' "$1" "$2"; }

if [[ " $WORKLOADS " == *" small "* ]]; then
  echo "== small: multi-stage Dockerfile (busybox, RUN, COPY, COPY --from)"
  ctx="$WORK/small"
  mkdir -p "$ctx/src"
  for i in $(seq 50); do echo "line $i" > "$ctx/src/f$i.txt"; done
  cat > "$ctx/Dockerfile" <<EOF
FROM $base AS build
WORKDIR /work
COPY src/ src/
RUN cat src/*.txt | wc -l > count && sha256sum src/*.txt > sums
FROM $base
COPY --from=build /work/count /work/sums /out/
RUN ls /out > /listing
EOF
  start_daemon
  report "cold" "$(build "$ctx" "$WORK/out-small")"
  noop=$(for _ in $(seq "$REPS"); do build "$ctx" "$WORK/out-small"; done | median)
  report "no-op rebuild (median)" "$noop"
  changed=$(for r in $(seq "$REPS"); do echo "changed $r" > "$ctx/src/f1.txt"; build "$ctx" "$WORK/out-small"; done | median)
  report "one file changed (median)" "$changed"
  stop_daemon
fi

if [[ " $WORKLOADS " == *" large "* ]]; then
  echo "== large: $FILES small files + one $BIG_MIB MiB file, COPY . /ctx/, type=local output"
  ctx="$WORK/large"
  mkdir -p "$ctx"
  python3 - "$ctx" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 200))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
        f.write(("file %d\n" % i) * (1 + i % 20))
PY
  head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom > "$ctx/big.bin"
  printf 'FROM scratch\nCOPY . /ctx/\n' > "$ctx/Dockerfile"
  sync
  t0=$(now); tar -C "$ctx" -cf - . | sha256sum >/dev/null; t1=$(now)
  report "floor: tar -c | sha256sum" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}')"
  start_daemon
  report "cold" "$(build "$ctx" "$WORK/out-large")"
  noop=$(for _ in $(seq "$REPS"); do build "$ctx" "$WORK/out-large"; done | median)
  report "no-op rebuild (median)" "$noop"
  changed=$(for r in $(seq "$REPS"); do echo "changed $r" > "$ctx/d000/f00000.txt"; build "$ctx" "$WORK/out-large"; done | median)
  report "one small file changed (median)" "$changed"
  # The exports after the first are incremental: the daemon's "copying files" status says
  # what went over the session.
  echo "   last re-export: $(grep 'copying files' "$WORK/progress.log" | tail -1 | sed 's/^#[0-9]* //')"
  stop_daemon
fi
