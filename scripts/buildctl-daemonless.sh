#!/usr/bin/env bash
# buildctl-daemonless.sh: runs one buildctl command against a private buildkitd that lives
# only as long as the command, so that no daemon has to be set up beforehand (CI jobs,
# one-off builds).
#
# Usage: buildctl-daemonless.sh BUILDCTL-ARGS...
#   e.g. buildctl-daemonless.sh build --output type=local,dest=out < definition.pb
# All arguments go to buildctl, after the --addr of the private daemon (so do not pass
# --addr yourself). Standard input goes to buildctl. The exit status is buildctl's.
#
# Environment:
#   BUILDKITD, BUILDCTL     the binaries (a path, or a name looked up on PATH; default
#                           buildkitd and buildctl)
#   BUILDKITD_FLAGS         more flags for buildkitd, split at whitespace (a --root here
#                           wins over BUILDKITD_ROOT)
#   BUILDKITD_ROOT          the daemon's state directory, kept between runs so that its
#                           cache is reused; default /var/lib/buildkit-daemonless for root,
#                           ${XDG_DATA_HOME:-$HOME/.local/share}/buildkit-daemonless for
#                           other users. One daemon at a time can use a root.
#   BUILDCTL_CONNECT_RETRIES_MAX
#                           how many more times to try reaching the new daemon before
#                           giving up (default 10, waits growing from 0.1 s)
#   BUILDKITD_STOP_TIMEOUT  seconds to wait for the daemon to exit after SIGTERM before
#                           SIGKILL (default 10)
#   TMPDIR                  where the temporary directory (socket, daemon log) goes
set -euo pipefail

prog=${0##*/}

die() {
	echo "$prog: $*" >&2
	exit 1
}

# The executable for $1 (a path or a name on PATH); $2 names the variable that set it.
resolve() {
	local found
	found=$(command -v -- "$1") || die "$1 not found (set $2 to its path, or put it on PATH)"
	[[ -f $found && -x $found ]] || die "$2: $found is not an executable file"
	printf '%s\n' "$found"
}

buildkitd=$(resolve "${BUILDKITD:-buildkitd}" BUILDKITD)
buildctl=$(resolve "${BUILDCTL:-buildctl}" BUILDCTL)

retries=${BUILDCTL_CONNECT_RETRIES_MAX:-10}
[[ $retries =~ ^[0-9]+$ ]] || die "BUILDCTL_CONNECT_RETRIES_MAX must be a number, not '$retries'"
stop_timeout=${BUILDKITD_STOP_TIMEOUT:-10}
[[ $stop_timeout =~ ^[0-9]+$ ]] || die "BUILDKITD_STOP_TIMEOUT must be a number, not '$stop_timeout'"

if [[ -n ${BUILDKITD_ROOT:-} ]]; then
	root=$BUILDKITD_ROOT
elif [[ $(id -u) == 0 ]]; then
	root=/var/lib/buildkit-daemonless
else
	[[ -n ${XDG_DATA_HOME:-} || -n ${HOME:-} ]] || die "neither XDG_DATA_HOME nor HOME is set; set BUILDKITD_ROOT"
	root=${XDG_DATA_HOME:-$HOME/.local/share}/buildkit-daemonless
fi

# BUILDKITD_FLAGS is a flag list: split it at whitespace, as a shell user writes it.
read -r -a flags <<<"${BUILDKITD_FLAGS:-}"
root_flag=(--root "$root")
for f in "${flags[@]}"; do
	if [[ $f == --root || $f == --root=* ]]; then
		root_flag=()
	fi
done
if ((${#root_flag[@]})); then
	mkdir -p -- "$root" || die "cannot create the state directory $root"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/buildctl-daemonless.XXXXXX") || die "cannot create a temporary directory"
addr="unix://$tmp/buildkitd.sock"
log=$tmp/buildkitd.log
pid=

# Whether process $1 runs: it exists and is not a zombie (a daemon that exited stays a
# zombie until we wait for it, and kill -0 would still find it).
running() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

show_log() {
	echo "$prog: ========== buildkitd log ==========" >&2
	cat "$log" >&2 || true
	echo "$prog: ===================================" >&2
}

# Stops the daemon (SIGTERM, then SIGKILL after $stop_timeout s), removes the temporary
# directory with the socket and the log, and exits with the status the script had.
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local status=$? i
	trap - EXIT INT TERM HUP
	if [[ -n $pid ]]; then
		if running "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			for ((i = 0; i < stop_timeout * 10; i++)); do
				running "$pid" || break
				sleep 0.1
			done
			if running "$pid"; then
				echo "$prog: buildkitd (pid $pid) still runs ${stop_timeout}s after SIGTERM; killing it" >&2
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf -- "$tmp"
	exit "$status"
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap, with the shell's usual status.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Started with stdin from /dev/null: buildctl may need the script's stdin (a definition).
"$buildkitd" "${flags[@]}" "${root_flag[@]}" --addr "$addr" </dev/null >"$log" 2>&1 &
pid=$!

try=0
until "$buildctl" --addr "$addr" debug workers </dev/null >/dev/null 2>&1; do
	if ! running "$pid"; then
		echo "$prog: buildkitd exited at start-up" >&2
		show_log
		exit 1
	fi
	if ((try >= retries)); then
		echo "$prog: could not connect to $addr after $((try + 1)) tries" >&2
		show_log
		exit 1
	fi
	try=$((try + 1))
	# 0.1 s more each time: 5.5 s in all for the default 10 retries
	delay=$((try * 100))
	sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"
done

set +e
"$buildctl" --addr "$addr" "$@"
status=$?
set -e
exit "$status"
