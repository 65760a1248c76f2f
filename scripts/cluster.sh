#!/usr/bin/env bash
# A local keel cluster on loopback: member i lives in zone z<i> on 127.0.i.1 (client port
# $KEEL_CLUSTER_CLIENT_PORT, default 2379; peer port $KEEL_CLUSTER_PEER_PORT, default 2380), its data
# under $KEEL_CLUSTER_DIR/m<i> (default ./.cluster).
#
#   scripts/cluster.sh start [--nodes N] [--tls DIR] [extra keeld flags...]
#                                    # --tls: TLS on the client ports with DIR's certificates
#                                    # (scripts/gen-certs.sh DIR): member i's own, client
#                                    # certificates required (DIR/client-*.pem)
#   scripts/cluster.sh status
#   scripts/cluster.sh stop          # ends only the processes this script started (by PID)
#   scripts/cluster.sh endpoints     # prints the client addresses, comma separated
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${KEEL_CLUSTER_DIR:-$PWD/.cluster}
cport=${KEEL_CLUSTER_CLIENT_PORT:-2379}
pport=${KEEL_CLUSTER_PEER_PORT:-2380}
keeld=${KEELD:-}
if [ -z "$keeld" ]; then
  for b in build/release build/asan build; do
    if [ -x "$b/server/keeld" ]; then keeld=$b/server/keeld; break; fi
  done
fi

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# The flags member $1 gets for --tls (certificates in $tls_dir, as gen-certs.sh names them).
tls_flags() {
  local i=$1
  [ -n "$tls_dir" ] || return 0
  echo "--cert-file $tls_dir/member-$i.pem --key-file $tls_dir/member-$i-key.pem" \
    "--trusted-ca-file $tls_dir/ca.pem --client-cert-auth"
}
tls_dir=

pid_alive() { # pid file -> 0 when that keeld is running
  local f=$1 pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q keeld
}

nodes_in_dir() { ls "$dir"/m*.pid 2>/dev/null | wc -l; }

cmd=${1:-}
[ -n "$cmd" ] || usage
shift || true

case "$cmd" in
start)
  n=3
  if [ "${1:-}" = "--nodes" ]; then n=$2; shift 2; fi
  if [ "${1:-}" = "--tls" ]; then tls_dir=$(cd "${2:?--tls needs a directory}" && pwd); shift 2; fi
  if [ -n "$tls_dir" ] && [ ! -f "$tls_dir/ca.pem" ]; then
    echo "cluster: --tls $tls_dir has no ca.pem (make it with scripts/gen-certs.sh $tls_dir)" >&2; exit 2
  fi
  [[ "$n" =~ ^[1-7]$ ]] || { echo "cluster: --nodes must be 1..7" >&2; exit 2; }
  [ -n "$keeld" ] || { echo "cluster: no keeld binary; build first (scripts/quickstart.sh)" >&2; exit 1; }
  mkdir -p "$dir"
  for i in $(seq 1 "$n"); do
    if pid_alive "$dir/m$i.pid"; then echo "cluster: m$i already running (pid $(cat "$dir/m$i.pid"))" >&2; exit 1; fi
  done
  initial=""
  for i in $(seq 1 "$n"); do initial+="${initial:+,}m$i=127.0.$i.1:$pport@z$i"; done
  for i in $(seq 1 "$n"); do
    "$keeld" --name "m$i" --data-dir "$dir/m$i" --listen-client "127.0.$i.1:$cport" \
      --listen-peer "127.0.$i.1:$pport" --initial-cluster "$initial" $(tls_flags "$i") "$@" \
      >>"$dir/m$i.log" 2>&1 &
    echo $! >"$dir/m$i.pid"
  done
  # Wait (bounded) for a leader: some member logs it.
  for _ in $(seq 1 100); do
    if grep -q "became leader" "$dir"/m*.log 2>/dev/null; then break; fi
    sleep 0.1
  done
  for i in $(seq 1 "$n"); do
    pid_alive "$dir/m$i.pid" || { echo "cluster: m$i failed to start; see $dir/m$i.log" >&2; tail -5 "$dir/m$i.log" >&2; exit 1; }
  done
  echo "cluster: $n members running (data in $dir)"
  ;;
stop)
  pids=()
  for f in "$dir"/m*.pid; do
    [ -f "$f" ] || continue
    if pid_alive "$f"; then pids+=("$(cat "$f")"); kill -TERM "$(cat "$f")"; fi
  done
  for _ in $(seq 1 100); do
    alive=0
    for p in "${pids[@]}"; do [ -d "/proc/$p" ] && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$dir"/m*.pid
  echo "cluster: stopped ${#pids[@]} members"
  ;;
status)
  for f in "$dir"/m*.pid; do
    [ -f "$f" ] || { echo "cluster: not running"; exit 0; }
    m=$(basename "$f" .pid)
    if pid_alive "$f"; then echo "$m running (pid $(cat "$f"))"; else echo "$m not running"; fi
  done
  ;;
endpoints)
  n=$(nodes_in_dir); [ "$n" -gt 0 ] || n=3
  eps=""
  for i in $(seq 1 "$n"); do eps+="${eps:+,}127.0.$i.1:$cport"; done
  echo "$eps"
  ;;
*) usage ;;
esac
