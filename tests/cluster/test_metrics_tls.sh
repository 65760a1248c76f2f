#!/usr/bin/env bash
# --listen-metrics https://HOST:PORT on keeld and keel-gateway (etcd's --listen-metrics-urls):
# /metrics and /health over TLS with the client port's certificate, refused to a client without
# the CA, and with --client-cert-auth to one without a client certificate; certificates renewed
# on disk are served after SIGHUP; http:// and a bare HOST:PORT stay plain; an https address
# without --cert-file is refused at start, naming the flag.
#
#   test_metrics_tls.sh KEELD KEEL_GATEWAY GEN_CERTS
#
# Members and the gateway on 127.0.171.1 (ports picked free); only the processes started here
# are stopped, by PID.
set -euo pipefail
KEELD=${1:?usage: test_metrics_tls.sh KEELD KEEL_GATEWAY GEN_CERTS}
GATEWAY=${2:?usage: test_metrics_tls.sh KEELD KEEL_GATEWAY GEN_CERTS}
GEN=${3:?usage: test_metrics_tls.sh KEELD KEEL_GATEWAY GEN_CERTS}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || { echo "SKIP: python3 is not installed"; exit 77; }
command -v curl >/dev/null || { echo "SKIP: curl is not installed"; exit 77; }
command -v openssl >/dev/null || { echo "SKIP: openssl is not installed"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-metricstls.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
# forget PID: it was waited for; cleanup must not signal whatever reuses its number.
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
host=127.0.171.1
used=" "
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.171.1", 0)); print(s.getsockname()[1])')
    case $used in *" $p "*) continue ;; esac
    used="$used$p "
    echo "$p"
    return
  done
  echo "no free port" >&2; exit 1
}
fail() { echo "FAIL: $*"; for f in "$dir"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }

"$GEN" "$dir/a" --members 1 --clients root --hosts "IP:$host" >/dev/null
"$GEN" "$dir/b" --members 1 --clients root --hosts "IP:$host" >/dev/null
mkdir -p "$dir/live"
cp "$dir/a/member-1.pem" "$dir/a/member-1-key.pem" "$dir/live/"
tlsflags=(--cert-file "$dir/live/member-1.pem" --key-file "$dir/live/member-1-key.pem"
  --trusted-ca-file "$dir/a/ca.pem")

# pipelined PORT [CA]: three GETs in one write (over TLS with CA), all three answered.
pipelined() {
  timeout 20 "$PY" - "$host" "$@" <<'PYEOF'
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
if len(sys.argv) > 3:
    s = ssl.create_default_context(cafile=sys.argv[3]).wrap_socket(s, server_hostname=host)
req = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n" \
      b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
s.sendall(req)
got = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
assert got.count(b"HTTP/1.1 ") == 3, got
assert got.startswith(b"HTTP/1.1 200 "), got
assert b"HTTP/1.1 404 " in got and got.endswith(b"/livez\n"), got
PYEOF
}

# keeld NAME METRICS_URL LOG [more flags]: start one member in the background (its PID in $last).
keeld() {
  local name=$1 murl=$2 log=$3
  shift 3
  local c p
  c=$(free_port)
  p=$(free_port)
  client_port=$c
  "$KEELD" --name "$name" --data-dir "$dir/$name" --listen-client "$host:$c" \
    --listen-peer "$host:$p" --initial-cluster "$name=$host:$p" --listen-metrics "$murl" \
    "$@" >"$dir/$log" 2>&1 &
  last=$!
  pids+=("$last")
}

# get URL OUT [curl flags]: curl's exit status, the body in OUT.
get() {
  local url=$1 out=$2
  shift 2
  curl -sS --max-time 10 -o "$out" "$@" "$url" 2>"$out.err"
}

# wait_up URL [curl flags]: until URL answers (20 s at most).
wait_up() {
  local url=$1
  shift
  for _ in $(seq 1 200); do
    get "$url" "$dir/wait.out" "$@" && return 0
    sleep 0.1
  done
  fail "$url did not answer: $(cat "$dir/wait.out.err")"
}

# ---- an https address without --cert-file is refused at start, naming the flag ----
# refused ADDRESS PATTERN: keeld with --listen-metrics ADDRESS must not start, and say PATTERN.
refused() {
  if "$KEELD" --name x --data-dir "$dir/x" --listen-client "$host:$(free_port)" \
    --listen-peer "$host:$(free_port)" --initial-cluster "x=$host:1234" \
    --listen-metrics "$1" >"$dir/refused.out" 2>&1; then
    fail "keeld took --listen-metrics $1"
  fi
  grep -q -- "$2" "$dir/refused.out" || fail "no reason saying '$2': $(cat "$dir/refused.out")"
}
m=$(free_port)
refused "https://$host:$m" '--listen-metrics https://.*needs --cert-file'
refused "ftp://$host:$m" '--listen-metrics .*scheme must be http or https'

# ---- keeld, https without client certificates ----
m=$(free_port)
keeld m1 "https://$host:$m" m1.log "${tlsflags[@]}"
m1=$last
murl="https://$host:$m"
wait_up "$murl/livez" --cacert "$dir/a/ca.pem"
get "$murl/metrics" "$dir/metrics.out" --cacert "$dir/a/ca.pem" || fail "/metrics: $(cat "$dir/metrics.out.err")"
grep -q '^keel_server_info{name="m1"' "$dir/metrics.out" || fail "/metrics has no keel_server_info"
grep -q '^keel_mvcc_current_revision ' "$dir/metrics.out" || fail "/metrics has no revision"
for _ in $(seq 1 100); do
  get "$murl/health" "$dir/health.out" --cacert "$dir/a/ca.pem" || true
  grep -q '"health":"true"' "$dir/health.out" && break
  sleep 0.1
done
grep -q '"health":"true"' "$dir/health.out" || fail "/health: $(cat "$dir/health.out")"
# Keep-alive over TLS: several requests on one connection, each answered whole.
curl -sS --max-time 10 --cacert "$dir/a/ca.pem" "$murl/livez" "$murl/readyz" "$murl/livez" \
  -o "$dir/k1" -o "$dir/k2" -o "$dir/k3" 2>"$dir/k.err" || fail "keep-alive: $(cat "$dir/k.err")"
[ "$(cat "$dir/k1" "$dir/k2" "$dir/k3")" = "$(printf 'ok\nok\nok')" ] || fail "keep-alive answers"
# Pipelined: three requests in one write get three answers, in order (one at a time inside).
pipelined "$m" "$dir/a/ca.pem" || fail "pipelined requests over TLS"
# Without the CA: curl does not trust it.
if get "$murl/metrics" "$dir/noca.out"; then fail "/metrics trusted without the CA"; fi
# Another CA: refused too.
if get "$murl/metrics" "$dir/bca.out" --cacert "$dir/b/ca.pem"; then fail "/metrics with another CA"; fi
# Plain HTTP to the TLS port gets no answer.
if get "http://$host:$m/metrics" "$dir/plain.out"; then fail "plain HTTP answered on the https port"; fi
# Garbage on the TLS port does not stop the member.
printf 'GET /metrics HTTP/1.1\r\n\r\n' | timeout 5 "$PY" -c '
import socket, sys
s = socket.create_connection(("'$host'", '$m'), timeout=5)
s.sendall(sys.stdin.buffer.read())
try: s.recv(100)
except Exception: pass
' || true
get "$murl/livez" "$dir/after.out" --cacert "$dir/a/ca.pem" || fail "member down after garbage"
grep -q 'serving /metrics, /health, /readyz and /livez on https://' "$dir/m1.log" ||
  fail "no log line naming https"

# SIGHUP: certificates of CA b on disk are served to new connections.
cp "$dir/b/member-1.pem" "$dir/b/member-1-key.pem" "$dir/live/"
kill -HUP "$m1"
for _ in $(seq 1 100); do
  grep -q 'SIGHUP: client port and --listen-metrics certificates reloaded' "$dir/m1.log" && break
  sleep 0.1
done
grep -q 'SIGHUP: client port and --listen-metrics certificates reloaded' "$dir/m1.log" ||
  fail "no reload logged"
get "$murl/metrics" "$dir/reload.out" --cacert "$dir/b/ca.pem" || fail "after SIGHUP, CA b: $(cat "$dir/reload.out.err")"
if get "$murl/metrics" "$dir/reload2.out" --cacert "$dir/a/ca.pem"; then fail "after SIGHUP, still CA a"; fi
kill -TERM "$m1"
wait "$m1" || fail "m1 did not stop cleanly"
forget "$m1"
cp "$dir/a/member-1.pem" "$dir/a/member-1-key.pem" "$dir/live/"

# ---- keeld, https with --client-cert-auth ----
m=$(free_port)
keeld m2 "https://$host:$m" m2.log "${tlsflags[@]}" --client-cert-auth
m2=$last
m2_client=$client_port
murl="https://$host:$m"
cert=(--cacert "$dir/a/ca.pem" --cert "$dir/a/client-root.pem" --key "$dir/a/client-root-key.pem")
wait_up "$murl/livez" "${cert[@]}"
get "$murl/metrics" "$dir/cc.out" "${cert[@]}" || fail "/metrics with a client certificate"
grep -q '^keel_server_info{name="m2"' "$dir/cc.out" || fail "/metrics (client cert) has no keel_server_info"
get "$murl/health" "$dir/cch.out" "${cert[@]}" || true
grep -q '"health":' "$dir/cch.out" || fail "/health with a client certificate: $(cat "$dir/cch.out")"
if get "$murl/metrics" "$dir/nocert.out" --cacert "$dir/a/ca.pem"; then
  fail "/metrics served without a client certificate"
fi
if get "$murl/metrics" "$dir/bcert.out" --cacert "$dir/a/ca.pem" --cert "$dir/b/client-root.pem" \
  --key "$dir/b/client-root-key.pem"; then
  fail "/metrics served to a client certificate of another CA"
fi
get "$murl/livez" "$dir/after2.out" "${cert[@]}" || fail "m2 down after refusals"

# ---- keel-gateway ----
g=$(free_port)
gm=$(free_port)
if "$GATEWAY" --listen "$host:$g" --endpoints "https://$host:$m2_client" \
  --listen-metrics "https://$host:$gm" >"$dir/gwrefused.out" 2>&1; then
  fail "keel-gateway took an https --listen-metrics without --cert-file"
fi
grep -q -- '--listen-metrics https://.*needs --cert-file' "$dir/gwrefused.out" ||
  fail "keel-gateway: no reason naming --listen-metrics: $(cat "$dir/gwrefused.out")"
"$GATEWAY" --listen "$host:$g" --endpoints "https://$host:$m2_client" \
  --upstream-cacert "$dir/a/ca.pem" --upstream-cert "$dir/a/client-root.pem" \
  --upstream-key "$dir/a/client-root-key.pem" "${tlsflags[@]}" --client-cert-auth \
  --listen-metrics "https://$host:$gm" >"$dir/gw.log" 2>&1 &
gw=$!
pids+=("$gw")
gurl="https://$host:$gm"
wait_up "$gurl/livez" "${cert[@]}"
get "$gurl/metrics" "$dir/gwm.out" "${cert[@]}" || fail "gateway /metrics"
grep -q '^keel_gateway_connections ' "$dir/gwm.out" || fail "gateway /metrics has no series"
get "$gurl/health" "$dir/gwh.out" "${cert[@]}" || fail "gateway /health"
# curl offers h2 first: the metrics listener must agree on HTTP/1.1.
curl -sS --max-time 10 -o /dev/null -w '%{http_version}\n' "${cert[@]}" "$gurl/livez" >"$dir/ver.out"
[ "$(cat "$dir/ver.out")" = "1.1" ] || fail "gateway metrics spoke HTTP/$(cat "$dir/ver.out")"
if get "$gurl/metrics" "$dir/gwnocert.out" --cacert "$dir/a/ca.pem"; then
  fail "gateway /metrics served without a client certificate"
fi
if get "$gurl/metrics" "$dir/gwnoca.out"; then fail "gateway /metrics trusted without the CA"; fi
kill -TERM "$gw"
wait "$gw" || fail "keel-gateway did not stop cleanly"
forget "$gw"

# A plain gateway metrics listener, given as http://.
"$GATEWAY" --listen "$host:$g" --endpoints "https://$host:$m2_client" \
  --upstream-cacert "$dir/a/ca.pem" --upstream-cert "$dir/a/client-root.pem" \
  --upstream-key "$dir/a/client-root-key.pem" --listen-metrics "http://$host:$gm" >"$dir/gw2.log" 2>&1 &
gw=$!
pids+=("$gw")
wait_up "http://$host:$gm/livez"
get "http://$host:$gm/metrics" "$dir/gwplain.out" || fail "gateway plain /metrics"
kill -TERM "$gw"
wait "$gw" || fail "keel-gateway (plain) did not stop cleanly"
forget "$gw"
kill -TERM "$m2"
wait "$m2" || fail "m2 did not stop cleanly"
forget "$m2"

# ---- keeld, http:// and bare HOST:PORT stay plain, even with --cert-file ----
m=$(free_port)
keeld m3 "http://$host:$m" m3.log "${tlsflags[@]}"
m3=$last
wait_up "http://$host:$m/livez"
get "http://$host:$m/metrics" "$dir/m3.out" || fail "m3 plain /metrics"
pipelined "$m" || fail "pipelined plain requests"
grep -q '^keel_server_info{name="m3"' "$dir/m3.out" || fail "m3 /metrics"
kill -TERM "$m3"
wait "$m3" || fail "m3 did not stop cleanly"
forget "$m3"
echo "PASS"
