#!/usr/bin/env bash
# The cost of peer TLS (issue 16): keel-bench put, 64 clients over 8 connections and 1 client,
# against a fresh 3-member cluster with peer TLS off, then on, RUNS times alternating, SECONDS
# each; prints every run and the medians (requests/s and the ratio on/off). Take it alone on
# the machine:
#
#   flock -x /tmp/keel-cpu.lock tests/perf/peer_tls_bench.sh build/release [RUNS] [SECONDS]
#
# Members on 127.0.{1,2,3}.1, ports $PORT (client) and $PORT+1 (peer), default 23179; only the
# processes scripts/cluster.sh starts here are stopped. Not a ctest test: a measurement.
set -euo pipefail
B=${1:?usage: peer_tls_bench.sh BUILD_DIR [RUNS] [SECONDS]}
runs=${2:-3}
secs=${3:-5}
port=${PORT:-23179}
root=$(cd "$(dirname "$0")/../.." && pwd)
B=$(cd "$B" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-tlsbench.XXXXXX")
cleanup() {
  KEEL_CLUSTER_DIR=$dir/c "$root/scripts/cluster.sh" stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
# One certificate naming the three members' addresses: every member shows it.
"$root/scripts/gen-certs.sh" "$dir/certs" --members 1 \
  --hosts IP:127.0.1.1,IP:127.0.2.1,IP:127.0.3.1 >/dev/null
tls=(--peer-cert-file "$dir/certs/member-1.pem" --peer-key-file "$dir/certs/member-1-key.pem"
  --peer-trusted-ca-file "$dir/certs/ca.pem")
eps=127.0.1.1:$port,127.0.2.1:$port,127.0.3.1:$port

# bench MODE -> "put64 put1" (requests/s)
bench() {
  local mode=$1 flags=() out64 out1
  [ "$mode" = on ] && flags=("${tls[@]}")
  rm -rf "$dir/c"
  KEEL_CLUSTER_DIR=$dir/c KEEL_CLUSTER_CLIENT_PORT=$port KEEL_CLUSTER_PEER_PORT=$((port + 1)) \
    KEELD=$B/server/keeld "$root/scripts/cluster.sh" start "${flags[@]}" >/dev/null
  for _ in $(seq 1 100); do
    "$B/client/keelctl" --endpoints "$eps" --command-timeout 2s put warm up >/dev/null 2>&1 && break
    sleep 0.2
  done
  out64=$("$B/bench/keel-bench" --endpoints "$eps" --conns 8 --clients 64 --duration "$secs" \
    --json put)
  out1=$("$B/bench/keel-bench" --endpoints "$eps" --conns 1 --clients 1 --duration "$secs" \
    --json put)
  if [ "$mode" = on ]; then
    grep -q "peer TLS on" "$dir/c/m1.log" || { echo "peer TLS is not on" >&2; exit 1; }
  fi
  KEEL_CLUSTER_DIR=$dir/c "$root/scripts/cluster.sh" stop >/dev/null
  printf '%s\n%s\n' "$out64" "$out1" | python3 -c '
import json, sys
r = [json.loads(l) for l in sys.stdin if l.strip()]
def rate(j):
    return float(j["summary"]["rps"])
print("%.0f %.0f" % (rate(r[0]), rate(r[1])))'
}

declare -a off64 off1 on64 on1
for r in $(seq 1 "$runs"); do
  read -r a b <<<"$(bench off)"
  off64+=("$a"); off1+=("$b")
  read -r c d <<<"$(bench on)"
  on64+=("$c"); on1+=("$d")
  echo "run $r: put 64 clients/8 conns: off $a on $c req/s; put 1 client: off $b on $d req/s"
done
python3 - "${off64[*]}" "${on64[*]}" "${off1[*]}" "${on1[*]}" <<'PY'
import statistics, sys
o64, n64, o1, n1 = ([float(x) for x in a.split()] for a in sys.argv[1:5])
for name, off, on in (("put 64 clients/8 conns", o64, n64), ("put 1 client", o1, n1)):
    mo, mn = statistics.median(off), statistics.median(on)
    print("%s: median off %.0f, on %.0f req/s: TLS keeps %.1f%% (loss %.1f%%)"
          % (name, mo, mn, 100 * mn / mo, 100 * (1 - mn / mo)))
PY
