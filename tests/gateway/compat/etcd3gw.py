#!/usr/bin/python3
"""python3-etcd3gw (Debian, unmodified; etcd's JSON gateway) against an endpoint: put, get,
delete, txn, lease, watch, status, members; results as JSON lines with revisions relative to a
marker put at the start, ids replaced by placeholders (their JSON type kept: etcd sends int64 as
strings), so that runs against etcd and against keel-gateway can be compared.

    etcd3gw.py run HOST PORT API_PATH > out.jsonl
    etcd3gw.py compare ORACLE.jsonl OTHER.jsonl LABEL   (exit 1 on any difference)

etcd3gw 2.0 defaults to api_path '/v3alpha/', which etcd 3.4 answers 404: the oracle runs with
'/v3/', the gateway with '/v3/' and with the default. Every call has a timeout; every wait is
bounded.
"""
import json
import os
import queue
import sys
import threading

# This file is named like the library: keep its own directory off the import path.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]

ID_KEYS = {"cluster_id", "member_id", "raft_term", "raftTerm", "leader", "ID"}
REV_KEYS = {"revision", "create_revision", "mod_revision", "compact_revision"}
NUM_KEYS = {"raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse"}


def run(host, port, api_path):
    from etcd3gw.client import Etcd3Client
    from etcd3gw import exceptions

    kw = {"host": host, "port": int(port), "timeout": 10}
    if api_path != "default":
        kw["api_path"] = api_path
    c = Etcd3Client(**kw)
    out = sys.stdout
    state = {"r0": 0}

    def rel(v):
        try:
            n = int(v)
        except (TypeError, ValueError):
            return v
        if n == 0:
            return v
        return "%s:R%+d" % (type(v).__name__, n - state["r0"])

    def norm(x, parent=None):
        if isinstance(x, dict):
            o = {}
            for k, v in x.items():
                if k in ID_KEYS:
                    o[k] = "%s:<ID>" % type(v).__name__
                elif k in REV_KEYS:
                    o[k] = rel(v)
                elif k in NUM_KEYS:
                    o[k] = "%s:<N>" % type(v).__name__
                elif k == "version" and isinstance(v, str) and "." in v:  # the server's
                    o[k] = "<VERSION %s>" % ".".join("N" if p.isdigit() else p for p in v.split("."))
                elif k == "TTL" and "grantedTTL" in x and 0 < int(v) <= int(x["grantedTTL"]):
                    o[k] = "%s:<0<TTL<=granted>" % type(v).__name__
                elif k in ("clientURLs", "peerURLs"):
                    o[k] = ["<URL>" for _ in v]
                elif k == "lease":
                    o[k] = "%s:<LEASE>" % type(v).__name__
                else:
                    o[k] = norm(v, k)
            return o
        if isinstance(x, (list, tuple)):
            return [norm(v, parent) for v in x]
        if isinstance(x, bytes):
            return "bytes:" + x.decode("utf-8", "replace")
        if x is None or isinstance(x, (str, int, float, bool)):
            return x
        return "<%s>" % type(x).__name__

    def emit(step, **r):
        r["step"] = step
        out.write(json.dumps(r, sort_keys=True) + "\n")
        out.flush()

    def call(step, fn, *a, **k):
        try:
            res = fn(*a, **k)
            emit(step, result=norm(res))
            return res
        except exceptions.Etcd3Exception as e:
            emit(step, error=type(e).__name__, detail=norm(_jsonish(e.detail_text)))
        except Exception as e:  # a client-side failure (bad JSON, missing field) is a result too
            emit(step, error=type(e).__name__, detail=str(e)[:200])
        return None

    # marker: revisions below are relative to it
    try:
        m = c.post(c.get_url("/kv/put"), json={"key": "L3B5L21hcmtlcg==", "value": "bQ=="})
    except exceptions.Etcd3Exception as e:
        emit("marker", error=type(e).__name__, detail=norm(_jsonish(e.detail_text)))
        return
    state["r0"] = int(m["header"]["revision"])
    emit("marker", result=norm(m))

    call("put", c.put, "/py/a", "1")
    call("put-b", c.put, "/py/b", "2")
    call("get", c.get, "/py/a")
    call("get-metadata", c.get, "/py/a", metadata=True)
    call("get-missing", c.get, "/py/nope")
    call("get-prefix", c.get_prefix, "/py/")
    call("get-prefix-desc", c.get_prefix, "/py/", sort_order="descend", sort_target="mod")
    call("get-serializable", c.get, "/py/a", serializable=True)
    call("get-limit", c.post, c.get_url("/kv/range"), json={"key": "L3B5Lw==", "range_end": "L3B5MA==", "limit": 1})
    call("get-count-only", c.post, c.get_url("/kv/range"), json={"key": "L3B5Lw==", "range_end": "L3B5MA==", "count_only": True})
    call("get-future-rev", c.post, c.get_url("/kv/range"), json={"key": "L3B5L2E=", "revision": "100000"})
    call("get-no-key", c.post, c.get_url("/kv/range"), json={})
    call("create", c.create, "/py/c", "x")
    call("create-exists", c.create, "/py/c", "x")
    call("replace", c.replace, "/py/c", "x", "y")
    call("replace-wrong", c.replace, "/py/c", "x", "z")
    call("txn-raw", c.transaction, {
        "compare": [{"key": "L3B5L2M=", "result": "EQUAL", "target": "VALUE", "value": "eQ=="}],
        "success": [{"request_range": {"key": "L3B5L2M="}}, {"request_put": {"key": "L3B5L2Q=", "value": "ZA==", "prev_kv": True}}],
        "failure": [],
    })
    call("txn-mod-cas", c.transaction, {  # Patroni's shape: result omitted (EQUAL), MOD as a string
        "compare": [{"key": "L3B5L2M=", "target": "MOD", "mod_revision": "1"}],
        "success": [{"request_delete_range": {"key": "L3B5L2M="}}],
        "failure": [{"request_range": {"key": "L3B5L2M="}}],
    })
    call("delete", c.delete, "/py/a")
    call("delete-missing", c.delete, "/py/nope")
    call("delete-prev-kv", c.post, c.get_url("/kv/deleterange"), json={"key": "L3B5L2I=", "prev_kv": True})
    call("delete-prefix", c.delete_prefix, "/py/")
    call("get-after-delete", c.get_prefix, "/py/")

    # lease: grant, a key under it, ttl, keys, refresh (keepalive stream), revoke
    lease = call("lease-grant", lambda: c.lease(60))
    if lease is not None:
        emit("lease-id", positive=lease.id > 0)
        call("lease-put", c.put, "/py/l", "v", lease=lease)
        call("lease-get", c.get, "/py/l", metadata=True)
        try:
            ttl = lease.ttl()
            emit("lease-ttl", in_range=0 < ttl <= 60)
        except Exception as e:
            emit("lease-ttl", error=type(e).__name__, detail=str(e)[:200])
        call("lease-keys", lease.keys)
        call("lease-refresh", lease.refresh)
        call("lease-timetolive-raw", c.post, c.get_url("/lease/timetolive"), json={"ID": lease.id, "keys": True})
        call("lease-leases", lambda: sorted(int(l["ID"]) == lease.id for l in c.post(c.get_url("/lease/leases"), json={}).get("leases", [])))
        call("lease-revoke", lease.revoke)
        call("lease-get-after-revoke", c.get, "/py/l")
        call("lease-ttl-after-revoke", lease.ttl)
        call("lease-refresh-after-revoke", lease.refresh)
        call("lease-revoke-again", lease.revoke)
    lmin = call("lease-grant-min", lambda: c.post(c.get_url("/lease/grant"), json={"TTL": 1}))
    if lmin is not None:  # gone before the next run on the same cluster (it may expire first)
        try:
            c.post(c.get_url("/kv/lease/revoke"), json={"ID": lmin["ID"]})
        except Exception:
            pass

    # watch: from a fixed revision (so creation timing does not matter), with prev_kv
    cur = int(c.post(c.get_url("/kv/range"), json={"key": "eA=="})["header"]["revision"])
    events, cancel = c.watch_prefix("/py/w/", start_revision=cur + 1, prev_kv=True)
    got = queue.Queue()

    def reader():
        try:
            for e in events:
                got.put(e)
        except Exception as ex:
            got.put({"reader_error": str(ex)[:200]})

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    call("w-put1", c.put, "/py/w/1", "a")
    call("w-put2", c.put, "/py/w/1", "b")
    call("w-del", c.delete, "/py/w/1")
    call("w-put3", c.put, "/py/w/2", "c")
    evs = []
    for _ in range(4):
        try:
            evs.append(got.get(timeout=20))
        except queue.Empty:
            evs.append("timeout")
            break
    cancel()
    emit("watch-events", events=norm(evs))
    ev = None
    try:
        ev = c.watch_once("/py/w/2", timeout=20, start_revision=cur + 1)
    except Exception as e:
        ev = {"error": type(e).__name__}
    emit("watch-once-replay", event=norm(ev))

    # cluster and maintenance, /version, /health
    st = call("status", c.status)
    if st is not None:
        emit("status-leader-is-self", same=st.get("leader") == st.get("header", {}).get("member_id"))
    call("members", lambda: sorted(m.get("name", "") for m in c.members()))
    call("members-raw", c.members)
    base = c.get_url("").split(c.api_path)[0] if c.api_path in c.get_url("") else ""
    for path in ("/version", "/health"):
        try:
            r = c.session.get(base + path, timeout=10)
            body = r.json()
            if path == "/version":
                body = {k: [p.isdigit() for p in str(v).split(".")] for k, v in body.items()}
            emit("GET" + path, status=r.status_code, body=body)
        except Exception as e:
            emit("GET" + path, error=type(e).__name__)
    call("compaction", c.post, c.get_url("/kv/compaction"), json={"revision": str(state["r0"] + 2)})
    call("compaction-again", c.post, c.get_url("/kv/compaction"), json={"revision": str(state["r0"] + 2)})
    call("get-compacted", c.post, c.get_url("/kv/range"), json={"key": "L3B5L2E=", "revision": str(state["r0"] + 1)})
    call("unknown-path", c.post, c.get_url("/kv/nosuch"), json={})
    # leave the keyspace as found, for a next run on the same cluster
    call("cleanup", c.delete_prefix, "/py/")


def _jsonish(s):
    try:
        return json.loads(s)
    except (TypeError, ValueError):
        return s


def compare(a, b, label):
    def load(p):
        order, d = [], {}
        for line in open(p):
            if line.strip():
                r = json.loads(line)
                order.append(r["step"])
                d[r["step"]] = r
        return order, d

    order, da = load(a)
    _, db = load(b)
    passed = failed = 0
    for s in order:
        if da[s] == db.get(s):
            passed += 1
            continue
        failed += 1
        print("=== DIFFERENT %s (%s)" % (s, label))
        print("    etcd:    %s" % json.dumps(da[s], sort_keys=True))
        print("    gateway: %s" % json.dumps(db.get(s), sort_keys=True))
    print("compat etcd3gw %s: %d passed, %d failed" % (label, passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    if len(sys.argv) == 5 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3], sys.argv[4]))
    sys.stderr.write(__doc__)
    sys.exit(2)
