#!/usr/bin/env bash
# Installs the Debian packages that the build, the main job and the tests need.
# Safe to run again; does nothing for packages already present. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  ca-certificates
  curl
  python3
  build-essential      # cc for crates that compile C (zstd, libfuzzer)
  pkg-config
  runc                 # the executor runs containers with it
  docker-registry      # Distribution v2.8: the local test registry
  busybox-static       # base image fixture
  skopeo               # independent check of pushed images
  git                  # git:// sources run it; their tests serve repositories with git daemon
  docker.io            # dockerd: the tests check that `docker load` takes our docker tarballs
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a stable Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
fi
