#!/usr/bin/env bash
# keel-gateway's JSON gateway (gateway/http1.c) end to end: a real 3-member keel cluster, a real
# keel-gateway in front of it, and real HTTP clients (curl, raw sockets from Python, Debian's
# python3-etcd3gw). Checks the routes (/version, /health, POST /v3/..., the /v3beta/ and
# /v3alpha/ aliases, etcd's /v3/kv/lease/... bindings, 404, 405, 501), errors as etcd's gateway
# writes them, pipelining, a chunked watch read with curl -N --raw (one {"result":...} per chunk),
# the lease keep-alive stream, bodies over the limit (413) and decoded messages over it (400),
# garbage (400, closed) with the gateway serving on, and a clean SIGTERM exit (ASan builds report
# leaks there).
#
#   test_http1.sh KEELD KEEL_GATEWAY
#
# Uses the 127.0.x.1 blocks 146..150 (tests/gateway/compat/lib.sh's scheme). Skips (77) without
# curl; the python3-etcd3gw part skips itself when the package is absent.
set -euo pipefail
KEELD=${1:?usage: test_http1.sh KEELD KEEL_GATEWAY}
GW=${2:?usage: test_http1.sh KEELD KEEL_GATEWAY}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=compat/lib.sh
. "$HERE/compat/lib.sh"

compat_init http1 146
command -v curl >/dev/null || compat_skip "curl is not installed"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || compat_skip "python3 is not installed"

compat_start_keel "$KEELD"
compat_start_gateway "$GW"
HOSTPORT=${GW_EP#http://}
GW_HOST=${HOSTPORT%:*}
GW_PORT=${HOSTPORT#*:}

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); compat_log "ok: $*"; }
bad() { FAIL=$((FAIL + 1)); compat_log "FAIL: $*"; }

# check NAME WANT GOT: equal strings
check() {
    if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: want [$2], got [$3]"; fi
}
# contains NAME NEEDLE HAYSTACK
contains() {
    case "$3" in *"$2"*) ok "$1" ;; *) bad "$1: [$2] not in [$3]" ;; esac
}

# post PATH BODY -> "STATUS BODY"
post() { curl -s --max-time 10 -X POST "$GW_EP$1" -d "$2" -w ' %{http_code}'; }

# ---------------------------------------------------------------------------------------------
# Routes
check "GET /version" '{"etcdserver":"3.4.23","etcdcluster":"3.4.0"} 200' \
    "$(curl -s --max-time 10 "$GW_EP/version" -w ' %{http_code}')"
check "GET /health" '{"health":"true"} 200' "$(curl -s --max-time 10 "$GW_EP/health" -w ' %{http_code}')"
check "POST /version is 405" "405" \
    "$(curl -s --max-time 10 -o /dev/null -X POST "$GW_EP/version" -w '%{http_code}')"
check "unknown /v3/ path is 404" "Not Found 404" \
    "$(curl -s --max-time 10 -X POST "$GW_EP/v3/kv/nope" -d '{}' -w ' %{http_code}' | tr -d '\n')"
check "path outside /v3/ is 404" "404 page not found 404" \
    "$(curl -s --max-time 10 -X POST "$GW_EP/nope" -d '{}' -w ' %{http_code}' | tr -d '\n')"
check "GET on a method path is 405" "Method Not Allowed 405" \
    "$(curl -s --max-time 10 "$GW_EP/v3/kv/range" -w ' %{http_code}' | tr -d '\n')"

# The JSON of a put and a range, field by field as etcd writes them.
out=$(post /v3/kv/put '{"key":"aHR0cDE=","value":"b25l"}')
contains "put answers a header" '{"header":{"cluster_id":"' "$out"
contains "put is 200" ' 200' "$out"
rev=$(printf '%s' "${out% *}" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
out=$(post /v3/kv/range '{"key":"aHR0cDE="}')
contains "range: int64 as strings, bytes base64" \
    "\"kvs\":[{\"key\":\"aHR0cDE=\",\"create_revision\":\"$rev\",\"mod_revision\":\"$rev\",\"version\":\"1\",\"value\":\"b25l\"}],\"count\":\"1\"} 200" "$out"
for prefix in v3beta v3alpha; do
    out=$(post /$prefix/kv/range '{"key":"aHR0cDE=","countOnly":true}')
    contains "/$prefix/ is an alias (and camelCase input)" '"count":"1"} 200' "$out"
done
out=$(post /v3/lease/grant '{"TTL":"30","ID":4242}')
contains "lease grant: ID, TTL by proto name" '"ID":"4242","TTL":"30"} 200' "$out"
out=$(post /v3/kv/lease/timetolive '{"ID":"4242"}')
contains "etcd's /v3/kv/lease/timetolive binding" '"ID":"4242","TTL":"' "$out"
contains "grantedTTL by proto name" '"grantedTTL":"30"} 200' "$out"
out=$(post /v3/kv/txn '{"compare":[{"target":"CREATE","key":"aHR0cDI=","create_revision":0}],"success":[{"request_put":{"key":"aHR0cDI=","value":"MQ==","lease":"4242"}}]}')
contains "txn: succeeded and a nested response_put with its header" \
    '"succeeded":true,"responses":[{"response_put":{"header":{"revision":"' "$out"
out=$(post /v3/kv/range '')
contains "empty body is the empty message (etcd: key is not provided)" \
    '{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3} 400' "$out"

# Errors: bad JSON and wrong types are 400, code 3, naming the field.
out=$(post /v3/kv/range '{"key":5}')
contains "wrong type: 400, code 3, field named" '"error":"key: expected a base64 string' "$out"
contains "wrong type status" '"code":3} 400' "$out"
out=$(post /v3/kv/txn '{"compare":[{"mod_revision":"x"}]}')
contains "nested field named" 'compare[0].mod_revision: expected an integer' "$out"
check "truncated JSON" '{"error":"unexpected EOF","message":"unexpected EOF","code":3} 400' \
    "$(post /v3/kv/range '{"key":"Zm9v",')"
check "future revision: etcd's error and status" \
    '{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11} 400' \
    "$(post /v3/kv/range '{"key":"Zm9v","revision":"999999"}')"
check "lease not found is 404 code 5" \
    '{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5} 404' \
    "$(post /v3/lease/revoke '{"ID":"987654321"}')"

# Too large: a JSON body past the bound is 413 without reading it; a message past
# --max-request-bytes (1.5 MiB) is etcd's 400.
"$PY" - "$COMPAT_DIR" <<'EOF'
import base64, json, sys
d = sys.argv[1]
open(d + "/big.json", "w").write(json.dumps({"key": "Zm9v", "value": base64.b64encode(b"x" * (1536 * 1024 + 10)).decode()}))
open(d + "/huge.json", "w").write(json.dumps({"key": "Zm9v", "value": base64.b64encode(b"x" * (3 * 1024 * 1024)).decode()}))
EOF
check "message over max-request-bytes: etcd's 400" \
    '{"error":"etcdserver: request is too large","message":"etcdserver: request is too large","code":3} 400' \
    "$(curl -s --max-time 20 -X POST "$GW_EP/v3/kv/put" --data-binary @"$COMPAT_DIR/big.json" -w ' %{http_code}')"
check "body over the bound: 413" "413" \
    "$(curl -s --max-time 20 -o /dev/null -X POST "$GW_EP/v3/kv/put" --data-binary @"$COMPAT_DIR/huge.json" -w '%{http_code}')"

# ---------------------------------------------------------------------------------------------
# Raw sockets: pipelining, garbage, oversized headers; each connection bounded in time.
if "$PY" - "$GW_HOST" "$GW_PORT" <<'EOF'; then ok "raw-socket checks"; else bad "raw-socket checks"; fi
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])

def conn():
    s = socket.create_connection((host, port), timeout=10)
    return s

def read_responses(s, n):
    """Read n Content-Length responses; returns [(status, body)]."""
    buf, out = b"", []
    deadline = time.time() + 10
    while len(out) < n and time.time() < deadline:
        while b"\r\n\r\n" in buf and len(out) < n:
            head, rest = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for l in lines[1:]:
                if l.lower().startswith("content-length:"):
                    length = int(l.split(":")[1])
            if len(rest) < length:
                break
            out.append((status, rest[:length]))
            buf = rest[length:]
        if len(out) < n:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    return out

def req(path, body, method="POST"):
    b = body.encode()
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n\r\n").encode() + b

failures = []
# Two requests in one write: a put then a range of the same key, answered in order.
s = conn()
s.sendall(req("/v3/kv/put", '{"key":"cGlwZQ==","value":"MQ=="}') +
          req("/v3/kv/range", '{"key":"cGlwZQ=="}') + req("/version", "", "GET"))
rs = read_responses(s, 3)
if len(rs) != 3 or [r[0] for r in rs] != [200, 200, 200]:
    failures.append(f"pipelining: {rs}")
else:
    put, rng = json.loads(rs[0][1]), json.loads(rs[1][1])
    if rng.get("kvs", [{}])[0].get("value") != "MQ==" or "prev_kv" in put:
        failures.append(f"pipelining order: {rs}")
    if json.loads(rs[2][1]).get("etcdserver") != "3.4.23":
        failures.append(f"pipelined /version: {rs[2]}")
s.close()

# The same, split byte by byte across writes.
s = conn()
data = req("/v3/kv/range", '{"key":"cGlwZQ=="}') * 2
for i in range(len(data)):
    s.send(data[i:i + 1])
rs = read_responses(s, 2)
if [r[0] for r in rs] != [200, 200]:
    failures.append(f"byte-by-byte pipelining: {rs}")
s.close()

# Garbage: 400 and the connection closed.
s = conn()
s.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
data = b""
deadline = time.time() + 10
while time.time() < deadline:
    d = s.recv(65536)
    if not d:
        break
    data += d
if not data.startswith(b"HTTP/1.1 400 "):
    failures.append(f"garbage: {data[:80]!r}")
s.close()

# Headers past http-parser's bound (80 KiB): 431, closed.
s = conn()
s.sendall(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
data = b""
deadline = time.time() + 10
while time.time() < deadline:
    try:
        d = s.recv(65536)
    except ConnectionResetError:
        break
    if not d:
        break
    data += d
if not data.startswith(b"HTTP/1.1 431 "):
    failures.append(f"header overflow: {data[:80]!r}")
s.close()

# Connection: close is honoured.
s = conn()
s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
deadline = time.time() + 10
while time.time() < deadline:
    d = s.recv(65536)
    if not d:
        break
    data += d
if not data.startswith(b"HTTP/1.1 200 ") or b"Connection: close" not in data:
    failures.append(f"connection close: {data[:200]!r}")
s.close()

for f in failures:
    print("FAIL:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
check "the gateway serves on after garbage" '{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}' \
    "$(curl -s --max-time 10 "$GW_EP/version")"

# ---------------------------------------------------------------------------------------------
# Streams
# Watch: curl -N --raw shows the chunked encoding; every chunk must be exactly one
# {"result":...}\n. The watch stays open after the body ends: once the DELETE event (a whole
# chunk) has arrived the curls are stopped; --max-time only bounds them.
curl -s -N --raw --max-time 30 -X POST "$GW_EP/v3/watch" \
    -d '{"create_request":{"key":"d2F0Y2g=","range_end":"d2F0Y2g=","prev_kv":true}}' \
    >"$COMPAT_DIR/watch.raw" 2>/dev/null &
WATCH_CURL=$!
compat_wait 10 grep -q created "$COMPAT_DIR/watch.raw" || bad "watch: no created response"
# range_end == key is an empty range in etcd; watch one key instead on a second watch.
curl -s -N --raw --max-time 30 -X POST "$GW_EP/v3/watch" \
    -d '{"create_request":{"key":"d2F0Y2g=","prev_kv":true}}' >"$COMPAT_DIR/watch2.raw" 2>/dev/null &
WATCH2_CURL=$!
compat_wait 10 grep -q created "$COMPAT_DIR/watch2.raw" || bad "watch 2: no created response"
post /v3/kv/put '{"key":"d2F0Y2g=","value":"MQ=="}' >/dev/null
post /v3/kv/deleterange '{"key":"d2F0Y2g="}' >/dev/null
# The DELETE event is in, and its chunk ended (the file ends with a chunk's CRLF).
watch2_has_delete() {
    grep -q '"type":"DELETE"' "$COMPAT_DIR/watch2.raw" &&
        [ "$(tail -c 2 "$COMPAT_DIR/watch2.raw" | od -An -tx1 | tr -d ' \n')" = 0d0a ]
}
compat_wait 20 watch2_has_delete || bad "watch 2: no DELETE event within 20 s"
kill "$WATCH_CURL" "$WATCH2_CURL" 2>/dev/null || true
wait "$WATCH_CURL" "$WATCH2_CURL" 2>/dev/null || true
if "$PY" - "$COMPAT_DIR/watch2.raw" <<'EOF'; then ok "watch: one {\"result\"} per chunk, PUT then DELETE with prev_kv"; else bad "watch chunks"; fi
import json, sys
raw = open(sys.argv[1], "rb").read()
chunks, i = [], 0
while i < len(raw):
    j = raw.index(b"\r\n", i)
    size = int(raw[i:j], 16)
    if size == 0:
        break
    chunks.append(raw[j + 2:j + 2 + size])
    assert raw[j + 2 + size:j + 4 + size] == b"\r\n", "chunk not terminated"
    i = j + 4 + size
msgs = []
for c in chunks:
    assert c.endswith(b"}\n") and c.count(b"\n") == 1, c
    msgs.append(json.loads(c)["result"])
assert msgs[0].get("created") is True and "events" not in msgs[0], msgs[0]
evs = [e for m in msgs[1:] for e in m["events"]]
assert "type" not in evs[0] and evs[0]["kv"]["value"] == "MQ==", evs  # PUT (zero) left out
assert evs[1]["type"] == "DELETE" and evs[1]["prev_kv"]["value"] == "MQ==", evs
assert evs[1]["kv"]["key"] == "d2F0Y2g=", evs
EOF

# Lease keep-alive: one result per request object, then the end of the stream. A lease granted
# just before (4242 from above may have expired by now on a slow machine).
post /v3/lease/revoke '{"ID":"4243"}' >/dev/null || true
out=$(post /v3/lease/grant '{"TTL":"30","ID":4243}')
contains "lease grant for keepalive" '"ID":"4243","TTL":"30"} 200' "$out"
out=$(curl -s -N --raw --max-time 10 -X POST "$GW_EP/v3/lease/keepalive" -d '{"ID":4243}{"ID":"4243"}')
check "keepalive: two result chunks and the last chunk" "2 1" \
    "$(printf '%s' "$out" | grep -c '^{"result":{"header":.*"ID":"4243","TTL":"30"}}' || true) $(printf '%s' "$out" | grep -c '^0' || true)"
post /v3/lease/revoke '{"ID":"4243"}' >/dev/null || true
out=$(curl -s --max-time 10 -X POST "$GW_EP/v3/lease/keepalive" -d '{"ID":"x"}' -w ' %{http_code}')
contains "keepalive: an undecodable first object is etcd's 500, code 2" '"code":2} 500' "$out"

# ---------------------------------------------------------------------------------------------
# python3-etcd3gw 2.0 (default api_path /v3alpha/): put, get, delete, lease, watch.
if [ -d /usr/lib/python3/dist-packages/etcd3gw ] && [ -x /usr/bin/python3 ]; then
    if timeout 60 /usr/bin/python3 - "$GW_HOST" "$GW_PORT" <<'EOF'; then ok "python3-etcd3gw"; else bad "python3-etcd3gw"; fi
import sys, threading, time
from etcd3gw.client import Etcd3Client
c = Etcd3Client(host=sys.argv[1], port=int(sys.argv[2]))
assert c.put("gw/a", "1") is True
assert c.get("gw/a") == [b"1"] or c.get("gw/a") == ["1"], c.get("gw/a")
assert c.create("gw/a", "2") is False
assert c.create("gw/b", "2") is True
assert len(c.get_prefix("gw/")) == 2
lease = c.lease(ttl=30)
assert lease.ttl() > 0, lease.ttl()
assert c.put("gw/leased", "x", lease=lease) is True
assert [k for k in lease.keys()] == [b"gw/leased"], lease.keys()
assert lease.refresh() == 30, lease.refresh()
assert lease.revoke() is True
assert c.get("gw/leased") == []
events, it_cancel = [], None
# Watch from a fixed revision, so the watch's creation time does not matter.
cur = int(c.post(c.get_url("/kv/range"), json={"key": "eA=="})["header"]["revision"])
it, cancel = c.watch_prefix("gw/w/", start_revision=cur + 1)
def reader():
    for ev in it:
        events.append(ev)
        if len(events) == 2:
            break
t = threading.Thread(target=reader, daemon=True)
t.start()
c.put("gw/w/1", "v1")
c.delete("gw/w/1")
t.join(20)
cancel()
assert len(events) == 2, events
assert events[0]["kv"]["key"] == b"gw/w/1" and events[0]["kv"]["value"] == b"v1", events
assert events[1].get("type") == "DELETE", events
assert c.delete("gw/a") is True and c.delete("gw/a") is False
print("etcd3gw ok")
EOF
else
    compat_log "python3-etcd3gw not installed: its part is skipped"
fi

# Hostile mixes, bounded (600 connections, 20 s): pipelined requests and streams cut at random
# points, a byte flipped, half-closes, disconnects mid-watch and mid-call.
if "$PY" - "$GW_HOST" "$GW_PORT" <<'EOF'; then ok "random cut/flipped requests"; else bad "random requests"; fi
import random, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
random.seed(20261206)
reqs = [b'POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{"key":"Zm9v"}',
        b'POST /v3/watch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
        b'22\r\n{"create_request":{"key":"Zm9v"}}\r\n',
        b'POST /v3/lease/keepalive HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{"ID":1}{"ID":2}{"I',
        b'GET /health HTTP/1.1\r\n\r\n',
        b'POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"key":"Zm9v","value":"',
        b'POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"create_request":{"key":"Zm9v"}}{bad',
        b'POST /v3/kv/txn HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}']
t0, n = time.time(), 0
while n < 600 and time.time() - t0 < 20:
    n += 1
    try:
        s = socket.create_connection((host, port), timeout=2)
        data = b"".join(random.choice(reqs) for _ in range(random.randint(1, 4)))
        if random.random() < 0.3:
            i = random.randrange(len(data))
            data = data[:i] + bytes([random.randrange(256)]) + data[i + 1:]
        if random.random() < 0.3:
            data = data[:random.randrange(len(data))]
        s.sendall(data)
        if random.random() < 0.5:
            s.settimeout(0.05)
            try:
                s.recv(65536)
            except OSError:
                pass
        if random.random() < 0.3:
            s.shutdown(socket.SHUT_WR)
        s.close()
    except OSError as e:
        print("connection error:", e, file=sys.stderr)
print(n, "connections", file=sys.stderr)
EOF
check "healthy after them" '{"health":"true"}' "$(curl -s --max-time 10 "$GW_EP/health")"

# SIGTERM with a watch open: it is cancelled, the gateway exits 0 (ASan's leak check runs at exit).
curl -s -N --max-time 20 -X POST "$GW_EP/v3/watch" -d '{"create_request":{"key":"Zm9v"}}' \
    >"$COMPAT_DIR/watch3.raw" 2>/dev/null &
WATCH3_CURL=$!
compat_wait 10 grep -q created "$COMPAT_DIR/watch3.raw" || bad "watch 3: no created response"
kill -TERM "$GW_PID"
rc=0
for _ in $(seq 1 100); do [ -d "/proc/$GW_PID" ] || break; sleep 0.1; done
wait "$GW_PID" || rc=$?
check "gateway exits 0 on SIGTERM" 0 "$rc"
wait "$WATCH3_CURL" 2>/dev/null || true
if grep -q -E 'Sanitizer|runtime error' "$COMPAT_DIR/gateway.log"; then
    bad "sanitizer report in the gateway log"
    grep -E -A20 'Sanitizer|runtime error' "$COMPAT_DIR/gateway.log" | head -40 >&2
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
