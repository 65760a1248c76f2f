#!/usr/bin/env bash
# What TLS on the client port costs (issue 16's goal: at most 15% of throughput): keel-bench put
# and range (serializable), 64 clients over 8 connections, plaintext against TLS (--cert-file,
# --client-cert-auth; keel-bench --cacert --cert --key), a fresh 3-member release cluster for
# every run, runs alternating (off, on, off, on, ...). Prints each run, then the median req/s of
# each workload per mode and the ratio on/off.
#
#   bench/tls.sh [--rounds 3] [--duration 5]
#
# Uses build/release (scripts/quickstart.sh or cmake -DCMAKE_BUILD_TYPE=Release builds it) and
# client ports 23379 on 127.0.1.1-127.0.3.1 (KEEL_CLUSTER_CLIENT_PORT / _PEER_PORT to move them).
# Run it alone on the machine: flock -x /tmp/keel-cpu.lock bench/tls.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rounds=3 duration=5
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) rounds=$2; shift 2 ;;
  --duration) duration=$2; shift 2 ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
B=$root/build/release
[ -x "$B/bench/keel-bench" ] && [ -x "$B/server/keeld" ] || { echo "tls.sh: build $B first" >&2; exit 2; }
export KEELD=$B/server/keeld
export KEEL_CLUSTER_CLIENT_PORT=${KEEL_CLUSTER_CLIENT_PORT:-23379}
export KEEL_CLUSTER_PEER_PORT=${KEEL_CLUSTER_PEER_PORT:-23380}
work=$(mktemp -d /tmp/keel-tlsbench-XXXXXX)
export KEEL_CLUSTER_DIR=$work/c
trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
scripts/gen-certs.sh "$work/certs" --members 3 --clients root >/dev/null
p=$KEEL_CLUSTER_CLIENT_PORT
eps=127.0.1.1:$p,127.0.2.1:$p,127.0.3.1:$p
declare -A got
for run in $(seq 1 "$rounds"); do
  for mode in off on; do
    rm -rf "$KEEL_CLUSTER_DIR"
    tls=() cli=()
    if [ $mode = on ]; then
      tls=(--tls "$work/certs")
      cli=(--cacert "$work/certs/ca.pem" --cert "$work/certs/client-root.pem"
        --key "$work/certs/client-root-key.pem")
    fi
    scripts/cluster.sh start --nodes 3 "${tls[@]}" >/dev/null
    sleep 1
    for wl in put range; do
      extra=()
      [ $wl = range ] && extra=(--consistency s) # the keys the put wrote
      rps=$("$B/bench/keel-bench" "${cli[@]}" --endpoints "$eps" --conns 8 --clients 64 \
        --duration "$duration" --key-space-size 10000 --val-size 256 "${extra[@]}" $wl \
        2>/dev/null | awk '/Requests\/sec/ {print $2}')
      echo "run $run  tls $mode  $wl  ${rps:-failed} req/s"
      got[$wl-$mode]+="${rps:-0} "
    done
    scripts/cluster.sh stop >/dev/null
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for wl in put range; do
  off=$(echo "${got[$wl-off]}" | median)
  on=$(echo "${got[$wl-on]}" | median)
  awk -v w="$wl" -v a="$off" -v b="$on" \
    'BEGIN {printf "%-6s median req/s: plaintext %.0f, TLS %.0f, TLS/plaintext %.3f\n", w, a, b, b / a}'
done
