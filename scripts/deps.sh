#!/usr/bin/env bash
# Install whatever keel needs to build and test that this machine lacks, from Debian's packages.
# Idempotent: prints what it installs, and nothing to do when everything is present.
set -euo pipefail

packages=(
  cmake gcc make pkg-config
  libraft-dev libuv1-dev liblmdb-dev libprotobuf-c-dev protobuf-c-compiler libssl-dev
  libcmocka-dev libjson-c-dev
  clang libclang-rt-14-dev
  libnetfilter-queue-dev iptables nftables
  strace
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: not root and no password-less sudo; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
  # Stale or absent package lists are the usual cause: refresh once and retry.
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
