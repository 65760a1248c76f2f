#!/usr/bin/env bash
# Install whatever keel needs to build and test that this machine lacks, from Debian's packages.
# Idempotent: prints what it installs, and nothing to do when everything is present.
set -euo pipefail

packages=(
  cmake gcc make pkg-config
  libraft-dev libuv1-dev liblmdb-dev libprotobuf-c-dev protobuf-c-compiler libssl-dev
  libcmocka-dev libjson-c-dev libnghttp2-dev libhttp-parser-dev
  libyaml-dev
  clang libclang-rt-14-dev
  libnetfilter-queue-dev iptables nftables
  strace
  iproute2 # tests/cluster/netns.sh brings up loopback in a test's own network namespace
  # scripts/gen-certs.sh (TLS tests, quickstart.sh --tls)
  openssl
  # keel-gateway's compatibility tests (tests/gateway/compat/): etcd's own clients, and etcd 3.4
  # as the oracle they are compared with.
  etcd-client etcd-server python3-etcd3gw golang-go golang-etcd-server-dev curl
  python3-yaml # tests/packaging/test_k8s_manifests.py parses deploy/kubernetes/ with it
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
# etcd-server's package service must not grab the ports the tests use: nothing is started on
# install here (no systemd in containers; where there is one, etcd's unit listens on
# 127.0.0.1:2379 only, as in bench/compare-etcd.sh), and while we install, a policy-rc.d that
# denies every start (exit 101) keeps invoke-rc.d / deb-systemd-invoke from starting it at all.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# scripts/deps.sh: no service starts while keel installs its packages\nexit 101\n' |
    "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
  # Stale or absent package lists are the usual cause: refresh once and retry.
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [ $own_policy -eq 1 ]; then
  "${sudo[@]}" rm -f "$policy"
  trap - EXIT
fi
