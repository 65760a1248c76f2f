#!/usr/bin/env bash
# Install what is missing, build a Release build, start a 3-member cluster across three zones on
# loopback, and show it working. --keep leaves the cluster running (stop it with
# scripts/cluster.sh stop). --tls: the same cluster with TLS on the client ports (certificates
# from scripts/gen-certs.sh in the cluster dir, client certificates required), shown with
# keelctl --cacert --cert --key.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
tls=0
for arg in "$@"; do
  case $arg in
  --keep) keep=1 ;;
  --tls) tls=1 ;;
  *) echo "usage: scripts/quickstart.sh [--keep] [--tls]" >&2; exit 2 ;;
  esac
done

./scripts/deps.sh

build=build/release
echo "== building ($build)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null

export KEEL_CLUSTER_DIR=$PWD/.cluster/quickstart
export KEELD=$PWD/$build/server/keeld
./scripts/cluster.sh stop >/dev/null 2>&1 || true
rm -rf "$KEEL_CLUSTER_DIR"

gateway_pid=
stop_gateway() {
  if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
}
stop_cluster() { stop_gateway; ./scripts/cluster.sh stop >/dev/null 2>&1 || true; }
if [ $keep -eq 0 ]; then trap stop_cluster EXIT; fi

echo "== starting 3 members: m1 in zone z1 (127.0.1.1), m2 in z2 (127.0.2.1), m3 in z3 (127.0.3.1)"
if [ $tls -eq 1 ]; then
  ./scripts/gen-certs.sh "$KEEL_CLUSTER_DIR/certs" --members 3 --clients root
  ./scripts/cluster.sh start --nodes 3 --tls "$KEEL_CLUSTER_DIR/certs"
else
  ./scripts/cluster.sh start --nodes 3
fi

ctl="$PWD/$build/client/keelctl"
all=127.0.1.1:2379,127.0.2.1:2379,127.0.3.1:2379
run() { echo "\$ keelctl $*"; "$ctl" "$@"; }

if [ $tls -eq 1 ]; then
  certs=$KEEL_CLUSTER_DIR/certs
  tlsargs=(--cacert "$certs/ca.pem" --cert "$certs/client-root.pem" --key "$certs/client-root-key.pem")
  # Shown with the paths shortened to the certificates' directory.
  runtls() {
    echo "\$ keelctl --cacert \$CERTS/ca.pem --cert \$CERTS/client-root.pem --key \$CERTS/client-root-key.pem $*"
    "$ctl" "${tlsargs[@]}" "$@"
  }
  echo
  echo "== TLS on every client port (CERTS=$certs): each member shows its own certificate,"
  echo "   and asks for a client certificate from the same CA"
  runtls --endpoints https://127.0.1.1:2379 put greeting "hello over TLS"
  runtls --endpoints "$all" get greeting
  runtls --endpoints 127.0.3.1:2379 get greeting --consistency s --print-value-only
  echo "\$ keelctl txn --compare 'value(\"greeting\") = \"hello over TLS\"' --then 'put greeting bye'"
  "$ctl" "${tlsargs[@]}" --endpoints "$all" txn --compare 'value("greeting") = "hello over TLS"' \
    --then 'put greeting bye'
  runtls --endpoints "$all" endpoint status -w table
  echo
  echo "== refused: no client certificate, and a client that does not speak TLS"
  echo "\$ keelctl --cacert \$CERTS/ca.pem --endpoints 127.0.1.1:2379 get greeting"
  "$ctl" --cacert "$certs/ca.pem" --endpoints 127.0.1.1:2379 get greeting || true
  run --endpoints 127.0.1.1:2379 get greeting || true
  echo
  echo "== a short benchmark over TLS: 20,000 puts from 32 concurrent clients"
  "$PWD/$build/bench/keel-bench" "${tlsargs[@]}" --endpoints "$all" --conns 4 --clients 32 \
    --total 20000 --key-space-size 10000 put | grep -E 'Requests/sec|50% in|99% in'
  echo
  echo "== certificates renewed on disk are read again on SIGHUP (no restart):"
  echo "\$ kill -HUP \$(cat $KEEL_CLUSTER_DIR/m1.pid)"
  kill -HUP "$(cat "$KEEL_CLUSTER_DIR/m1.pid")"
  sleep 0.3
  grep SIGHUP "$KEEL_CLUSTER_DIR/m1.log" | tail -1
  if [ $keep -eq 1 ]; then
    echo
    echo "cluster left running: $ctl --cacert $certs/ca.pem --cert $certs/client-root.pem --key $certs/client-root-key.pem --endpoints $all get greeting"
    echo "stop it with: KEEL_CLUSTER_DIR=$KEEL_CLUSTER_DIR scripts/cluster.sh stop"
  fi
  exit 0
fi

echo
echo "== writes through different members (followers send the client to the leader)"
run --endpoints 127.0.1.1:2379 put greeting "hello from zone 1"
run --endpoints 127.0.2.1:2379 put /app/config/replicas 3
run --endpoints 127.0.3.1:2379 put /app/config/image keel:0.1
echo
echo "== reads: linearizable through m3, serializable from each member's own store"
run --endpoints 127.0.3.1:2379 get greeting
run --endpoints "$all" get /app/config/ --prefix
for i in 1 2 3; do
  run --endpoints 127.0.$i.1:2379 get greeting --consistency s --print-value-only
done
echo
echo "== a transaction: update the image only if it is still keel:0.1"
echo "\$ keelctl txn --compare 'value(\"/app/config/image\") = \"keel:0.1\"' --then 'put /app/config/image keel:0.2' --else 'get /app/config/image'"
"$ctl" --endpoints "$all" txn --compare 'value("/app/config/image") = "keel:0.1"' \
  --then 'put /app/config/image keel:0.2' --else 'get /app/config/image'
echo
echo "== watch: a watcher on m2 sees the next two changes of 'greeting', made through m1"
"$ctl" --endpoints 127.0.2.1:2379 watch greeting --count 2 > "$KEEL_CLUSTER_DIR/watch.out" 2>&1 &
watcher=$!
sleep 0.5
run --endpoints 127.0.1.1:2379 put greeting "hello again"
run --endpoints 127.0.1.1:2379 del greeting
for _ in $(seq 1 50); do kill -0 "$watcher" 2>/dev/null || break; sleep 0.1; done
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
echo "\$ keelctl --endpoints 127.0.2.1:2379 watch greeting   # printed:"
cat "$KEEL_CLUSTER_DIR/watch.out"
echo
echo "== a lease: a key that vanishes when nobody keeps its lease alive"
lease=$("$ctl" --endpoints "$all" lease grant 2 | awk '{print $2}')
echo "\$ keelctl lease grant 2   # lease $lease"
run --endpoints "$all" put --lease "$lease" /app/leader m1
run --endpoints "$all" lease timetolive "$lease" --keys
echo "(3 s later)"
sleep 3
run --endpoints "$all" lease timetolive "$lease"
run --endpoints "$all" get /app/leader --count-only
echo
echo "== a short benchmark: 20,000 puts from 32 concurrent clients"
"$PWD/$build/bench/keel-bench" --endpoints "$all" --conns 4 --clients 32 --total 20000 \
  --key-space-size 10000 put | grep -E 'Requests/sec|50% in|99% in'
echo
echo "== cluster"
run --endpoints "$all" member list -w table
run --endpoints "$all" endpoint status -w table
run --endpoints "$all" endpoint health


echo
echo "== etcd's own client (Debian's etcdctl 3.4) through keel-gateway: etcd's v3 API on 127.0.0.1:23790"
"$PWD/$build/gateway/keel-gateway" --listen 127.0.0.1:23790 --endpoints "$all" \
  >>"$KEEL_CLUSTER_DIR/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 50); do
  curl -fs http://127.0.0.1:23790/version >/dev/null 2>&1 && break
  sleep 0.1
done
echo "\$ curl http://127.0.0.1:23790/version"
curl -fs http://127.0.0.1:23790/version; echo
etcd() { echo "\$ etcdctl $*"; ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:23790 "$@"; }
etcd put /registry/pods/default/web '{"kind":"Pod"}'
etcd get /registry/ --prefix
etcd txn <<'TXN'
mod("/registry/pods/default/web") > "0"

put /registry/pods/default/web {"kind":"Pod","phase":"Running"}


TXN
etcd get /registry/pods/default/web --print-value-only
etcd member list -w table

if [ $keep -eq 1 ]; then
  echo
  echo "keel-gateway left running (pid $gateway_pid): ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:23790 get greeting"
  echo "cluster left running: KEEL_ENDPOINTS=$all $ctl get greeting"
  echo "stop it with: KEEL_CLUSTER_DIR=$KEEL_CLUSTER_DIR scripts/cluster.sh stop"
fi
