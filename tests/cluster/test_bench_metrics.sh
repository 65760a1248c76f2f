#!/usr/bin/env bash
# keel-bench --metrics against a real keeld --listen-metrics: the run's puts show in the deltas
# it reports (the current revision moved by exactly the puts made, the key count by the keys
# made), in its JSON and in its text; an address nothing serves is refused before any load.
#
#   test_bench_metrics.sh KEELD KEEL_BENCH
#
# One member on 127.0.191.1 (ports picked free); only that process is stopped, by PID.
set -euo pipefail
KEELD=${1:?usage: test_bench_metrics.sh KEELD KEEL_BENCH}
BENCH=${2:?usage: test_bench_metrics.sh KEELD KEEL_BENCH}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || { echo "SKIP: python3 is not installed"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-benchmetrics.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.191.1", 0)); print(s.getsockname()[1])'
}
host=127.0.191.1
cport=$(free_port)
pport=$(free_port)
mport=$(free_port)
while [ "$pport" = "$cport" ]; do pport=$(free_port); done
while [ "$mport" = "$cport" ] || [ "$mport" = "$pport" ]; do mport=$(free_port); done
"$KEELD" --name b1 --data-dir "$dir/b1" --listen-client "$host:$cport" --listen-peer "$host:$pport" \
  --listen-metrics "$host:$mport" --initial-cluster "b1=$host:$pport" >"$dir/b1.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  "$BENCH" --endpoints "$host:$cport" --total 1 --timeout-ms 1000 put >/dev/null 2>&1 && break
  sleep 0.1
done

"$BENCH" --endpoints "$host:$cport" --metrics "http://$host:$mport/metrics" --total 500 \
  --clients 8 --key-space-size 100 --sequential-keys --json put >"$dir/run.json"
"$PY" - "$dir/run.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))["metrics_delta"]
assert d.get("keel_mvcc_current_revision") == 500, d
assert d.get("keel_mvcc_keys_total") == 99, d  # the first put made key 0 already
assert d.get("keel_server_proposals_applied_total", 0) > 0, d
assert "keel_server_has_leader" not in d, d  # it did not move
PYEOF
out=$("$BENCH" --endpoints "$host:$cport" --metrics "http://$host:$mport" --total 50 put)
grep -q '^Metrics that moved (http://' <<<"$out" || { echo "no metrics section"; exit 1; }
grep -Eq '^  keel_mvcc_current_revision +\+50 ' <<<"$out" || { echo "no revision delta: $out"; exit 1; }
if "$BENCH" --endpoints "$host:$cport" --metrics "http://$host:1" --total 10 put >"$dir/bad.out" 2>&1; then
  echo "a --metrics address nothing serves was taken"; exit 1
fi
grep -q 'cannot connect' "$dir/bad.out" || { cat "$dir/bad.out"; exit 1; }
echo "PASS"
