#!/usr/bin/env bash
# Layer diff/apply throughput of the archive crate next to GNU tar, on the same tree.
#
#   bench/layer.sh [SIZE_MIB]        (default 1024)
#
# Env: WORK (scratch dir, default /var/tmp/layerbench, removed at the end unless KEEP=1),
#      TMPFS (default 1: mount a tmpfs on WORK, needs root; 0: use the disk under WORK),
#      CARGO_TARGET_DIR (default /var/tmp/bk-target), REPS (runs per step, default 3; the
#      median is reported), GZIP_REPS (runs of the slow gzip diffs, default 1), SKIP_GZIP=1.
# Runs warm (the tree is in the page cache after generation, as a snapshot just written
# is); `sync` runs between steps and is not timed. Needs root for GNU tar to keep owners
# the way our apply does (it does not matter for the generated tree, which is root's).
set -euo pipefail

SIZE_MIB=${1:-1024}
WORK=${WORK:-/var/tmp/layerbench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/bk-target}
cd "$(dirname "$0")/.."

cargo build --quiet --release -p archive --example layerbench
BIN=$CARGO_TARGET_DIR/release/examples/layerbench

rm -rf "$WORK"
mkdir -p "$WORK"
if [ "${TMPFS:-1}" = 1 ]; then
    # Tree, tars and extractions in RAM: measures the tools, not the disk (whose
    # writeback makes extraction times swing several-fold on a shared VM).
    mount -t tmpfs -o size=$((SIZE_MIB * 7 + 512))m layerbench "$WORK"
    trap 'umount "$WORK"; rmdir "$WORK"' EXIT
else
    trap '[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
fi

"$BIN" gen "$WORK/tree" "$SIZE_MIB"
TREE_BYTES=$(du -sb --apparent-size "$WORK/tree" | cut -f1)
sync

# timed REPS NAME CLEAN CMD...: runs CMD REPS times (running CLEAN and sync before each),
# prints the median and best seconds and the median MiB/s of tree content.
timed() {
    local reps=$1 name=$2 clean=$3
    shift 3
    local times=() i start end
    for ((i = 0; i < reps; i++)); do
        eval "$clean"
        sync
        start=$(date +%s.%N)
        "$@" >"$WORK/last.log"
        end=$(date +%s.%N)
        times+=("$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk -v n="$name" -v b="$TREE_BYTES" '
        { t[NR] = $1 }
        END { m = t[int((NR + 1) / 2)]; printf "%-26s median %7.2f s  best %7.2f s  %7.1f MiB/s  (%d runs)\n", n, m, t[1], b / 1048576 / m, NR }'
    sed 's/^/      /' "$WORK/last.log"
}

echo "tree: $(find "$WORK/tree" -type f | wc -l) files, $((TREE_BYTES / 1048576)) MiB on $(stat -f -c %T "$WORK"); $(nproc) cores; $(uname -r)"
R=${REPS:-3}
GR=${GZIP_REPS:-1}
timed "$R" "ours diff (tar)" "rm -f $WORK/ours.tar" "$BIN" diff "$WORK/tree" "$WORK/ours.tar"
timed "$R" "GNU tar -c" "rm -f $WORK/gnu.tar" tar -C "$WORK/tree" -cf "$WORK/gnu.tar" .
timed "$R" "ours apply (tar)" "rm -rf $WORK/x" "$BIN" apply "$WORK/ours.tar" "$WORK/x"
timed "$R" "GNU tar -x" "rm -rf $WORK/x; mkdir $WORK/x" tar -C "$WORK/x" -xf "$WORK/gnu.tar"
if [ "${SKIP_GZIP:-0}" != 1 ]; then
    timed "$GR" "ours diff (gzip -6)" "rm -f $WORK/ours.tar.gz" "$BIN" diff "$WORK/tree" "$WORK/ours.tar.gz" gzip
    timed "$GR" "GNU tar -cz (gzip -6)" "rm -f $WORK/gnu.tar.gz" tar -C "$WORK/tree" -czf "$WORK/gnu.tar.gz" .
    timed "$R" "ours apply (gzip)" "rm -rf $WORK/x" "$BIN" apply "$WORK/ours.tar.gz" "$WORK/x"
    timed "$R" "GNU tar -xz" "rm -rf $WORK/x; mkdir $WORK/x" tar -C "$WORK/x" -xzf "$WORK/gnu.tar.gz"
fi
timed "$R" "ours diff (zstd -3)" "rm -f $WORK/ours.tar.zst" "$BIN" diff "$WORK/tree" "$WORK/ours.tar.zst" zstd
timed "$R" "ours apply (zstd)" "rm -rf $WORK/x" "$BIN" apply "$WORK/ours.tar.zst" "$WORK/x"
rm -rf "$WORK/x"
ls -l "$WORK"/*.tar* | awk '{ printf "      %-40s %7.1f MiB\n", $NF, $5 / 1048576 }'
