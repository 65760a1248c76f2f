#!/usr/bin/env python3
"""Normalize and compare two runs of the same etcdctl command list (tests/gateway/compat/etcdctl.sh).

    normalize.py ORACLE_DIR GATEWAY_DIR EXPECTED_FILE

Each run directory holds a manifest ("NN-name kind command" per line), NN-name.{out,err,rc}, r0
(the marker put's revision) and endpoint. What legitimately differs between two clusters is
replaced by placeholders: cluster/member ids (<CLUSTER>, <SELF> for the member that answered,
<ID> for others), raft terms and indexes, db sizes, server versions, timings, endpoints and peer
addresses; revisions become R+k relative to the marker; lease ids become L1, L2... in the order
each run first saw them (so a wrong id still shows). Prints every difference with the exact
command; exits 1 when a step not listed in EXPECTED_FILE differs.
"""
import difflib
import json
import os
import re
import sys

REV_KEYS = {"revision", "create_revision", "mod_revision", "compact_revision", "CompactRevision"}
NUM_KEYS = {"raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse", "raft_index"}
TERM_KEYS = {"raft_term", "raftTerm"}


class Side:
    def __init__(self, d):
        self.dir = d
        self.r0 = int(open(os.path.join(d, "r0")).read().strip() or 0)
        self.endpoint = open(os.path.join(d, "endpoint")).read().strip()
        others = os.path.join(d, "other-endpoints")
        self.endpoints = {self.endpoint}
        if os.path.exists(others):
            self.endpoints |= set(open(others).read().strip().split(","))
        self.leases = {}  # lease id (int) -> label
        self.steps = []
        for line in open(os.path.join(d, "manifest")):
            name, kind, cmd = line.rstrip("\n").split(" ", 2)
            self.steps.append((name, kind, cmd))

    def lease(self, v):
        if v == 0:
            return 0
        if v not in self.leases:
            self.leases[v] = "L%d" % (len(self.leases) + 1)
        return self.leases[v]

    def rel(self, v):
        if not isinstance(v, int) or v == 0:
            return v
        return "R%+d" % (v - self.r0)

    def ep(self, s):
        for e in sorted(self.endpoints, key=len, reverse=True):
            s = s.replace(e, "<EP>")
            hostport = e.split("://", 1)[-1]
            s = s.replace(hostport, "<EP>")
        return s


def json_docs(text):
    """The JSON documents in text (etcdctl prints one, or several back to back); None when some
    of it is not JSON."""
    dec = json.JSONDecoder()
    docs, i = [], 0
    text = text.strip()
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        try:
            doc, i = dec.raw_decode(text, i)
        except ValueError:
            return None
        docs.append(doc)
    return docs


def find_self(doc):
    if isinstance(doc, dict):
        if "member_id" in doc:
            return doc["member_id"]
        for v in doc.values():
            s = find_self(v)
            if s is not None:
                return s
    elif isinstance(doc, list):
        for v in doc:
            s = find_self(v)
            if s is not None:
                return s
    return None


def norm_json(side, doc, self_id, parent=None):
    if isinstance(doc, list):
        out = [norm_json(side, v, self_id, parent) for v in doc]
        if parent in ("members", "leases"):  # etcd lists leases in map order
            out.sort(key=lambda m: (str(m.get("name", "")), json.dumps(m, sort_keys=True)))
        return out
    if not isinstance(doc, dict):
        return doc
    out = {}
    if isinstance(doc.get("members"), list):
        out["(members whose ID is the header's member_id)"] = sum(
            1 for m in doc["members"] if isinstance(m, dict) and m.get("ID") == self_id)
    for k, v in doc.items():
        if k == "cluster_id":
            out[k] = "<CLUSTER>"
        elif k == "member_id":
            out[k] = "<SELF>"
        elif k == "leader":
            out[k] = "<SELF>" if v == self_id else ("<NONE>" if v == 0 else "<OTHER>")
        elif k in TERM_KEYS:
            out[k] = "<TERM>" if v else v
        elif k in REV_KEYS:
            out[k] = side.rel(v)
        elif k in NUM_KEYS:
            out[k] = "<N>" if v else v
        elif k == "version" and isinstance(v, str):
            out[k] = "<VERSION>"
        elif k == "took":
            out[k] = "<T>"
        elif k in ("Endpoint", "endpoint") and isinstance(v, str):
            out[k] = side.ep(v)
        elif k == "ID" and parent == "members":
            out[k] = "<ID>"  # which member answered is counted below, not placed
        elif k in ("ID", "id", "lease") and isinstance(v, int):
            out[k] = side.lease(v)
        elif k == "peerURLs":
            out[k] = ["<PEER>" for _ in v]
        elif k == "clientURLs":
            out[k] = [side.ep(u) for u in v]
        elif k == "ttl" and isinstance(v, int) and 0 < v <= doc.get("granted-ttl", 0):
            out[k] = "<0<TTL<=granted>"
        elif k == "error" and isinstance(v, str):
            out[k] = side.ep(v)
        else:
            out[k] = norm_json(side, v, self_id, k)
    return out


LEASE_RE = re.compile(r"\blease ([0-9a-f]+)\b")


def norm_text(side, text):
    def lease_sub(m):
        return "lease " + str(side.lease(int(m.group(1), 16)))

    lines = []
    for line in text.splitlines():
        line = line.replace(side.dir, "<OUT>")
        line = side.ep(line)
        line = LEASE_RE.sub(lease_sub, line)
        if re.fullmatch(r"[0-9a-f]{4,16}", line) and int(line, 16) in side.leases:
            line = side.leases[int(line, 16)]
        # etcdctl lock prints its key: the lock's prefix, then the session's lease id in hex
        m = re.fullmatch(r"(/c-lock/)([0-9a-f]+)", line)
        if m:
            line = m.group(1) + str(side.lease(int(m.group(2), 16)))
        line = re.sub(r"compacted revision (\d+)", lambda m: "compacted revision " + side.rel(int(m.group(1))), line)
        line = re.sub(r"remaining\((\d+)s\)", lambda m: "remaining(<S>)" if int(m.group(1)) > 0 else m.group(0), line)
        line = re.sub(r"took = [0-9.]+[a-zµ]+", "took = <T>", line)
        lines.append(line)
    if lines and re.fullmatch(r"found \d+ leases", lines[0]):
        lines[1:] = sorted(lines[1:])  # etcd lists leases in map order
    return "\n".join(lines)


def norm_table(side, text):
    header, rows, out = None, [], []
    for line in text.splitlines():
        if line.startswith("+"):
            continue
        if not line.startswith("|"):
            out.append(norm_text(side, line))
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        fixed = []
        for name, c in zip(header, cells):
            if name == "ID":
                c = "<ID>"
            elif name == "ENDPOINT":
                c = side.ep(c)
            elif name == "VERSION":
                c = "<VERSION>"
            elif name in ("DB SIZE", "RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX"):
                c = "<N>"
            elif name == "PEER ADDRS":
                c = "<PEER>"
            elif name == "CLIENT ADDRS":
                c = ",".join(side.ep(u) for u in c.split(","))
            elif name == "TOOK":
                c = "<T>"
            elif name == "ERROR":
                c = side.ep(c)
            fixed.append(c)
        rows.append(" | ".join(fixed))
    if header is not None:
        out = [" | ".join(header)] + sorted(rows) + out
    return "\n".join(out)


def norm_members(side, text):
    rows = []
    for line in text.splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) >= 6:
            f[0] = "<ID>"
            f[3] = "<PEER>"
            f[4] = side.ep(f[4])
            rows.append(", ".join(f))
        else:
            rows.append(norm_text(side, line))
    return "\n".join(sorted(rows))


def norm_status(side, text):
    rows = []
    for line in text.splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) >= 9:
            f[0] = side.ep(f[0])
            f[1] = "<ID>"
            f[2] = "<VERSION>"
            f[3] = "<N>"
            f[6] = f[7] = f[8] = "<N>"
            rows.append(", ".join(f))
        else:
            rows.append(norm_text(side, line))
    return "\n".join(sorted(rows))  # --cluster: in member order, which differs by cluster


def norm_hashkv(side, text):
    return "\n".join(re.sub(r"^(<EP>, )\d+$", r"\1<HASH>", norm_text(side, l)) for l in text.splitlines())


def norm_watch_json(side, text):
    """etcdctl watch -w json: how events are batched into responses depends on timing (etcd
    sends a replay and the events that arrive meanwhile in one response), so the events are
    compared as one list, and each response is checked for a header revision at least its
    last event's."""
    docs = json_docs(text)
    if docs is None:
        return "NOT JSON:\n" + norm_text(side, text)
    events, flags, header_ok = [], set(), True
    for d in docs:
        evs = d.get("Events") or []
        top = max([e.get("kv", {}).get("mod_revision", 0) for e in evs] or [0])
        if (d.get("Header") or {}).get("revision", 0) < top:
            header_ok = False
        for f in ("Created", "Canceled"):
            if d.get(f):
                flags.add(f)
        if d.get("CompactRevision"):
            flags.add("CompactRevision=%s" % side.rel(d["CompactRevision"]))
        events += [norm_json(side, e, find_self(d)) for e in evs]
    return json.dumps({"events": events, "flags": sorted(flags), "header revision >= events": header_ok},
                      indent=1, sort_keys=True)


def norm_stderr(side, text):
    """clientv3's zap warnings (retries) become 'LOG msg: error', once each."""
    out, seen = [], set()
    for line in text.splitlines():
        if line.startswith("{") and '"level"' in line:
            try:
                e = json.loads(line)
                line = "LOG %s: %s" % (e.get("msg"), e.get("error", ""))
            except ValueError:
                pass
            if line in seen:
                continue
            seen.add(line)
        out.append(norm_text(side, line))
    return "\n".join(out)


def normalize(side, name, kind):
    base = os.path.join(side.dir, name)
    out = open(base + ".out", errors="replace").read()
    err = open(base + ".err", errors="replace").read()
    rc = open(base + ".rc").read().strip()
    if kind == "json":
        docs = json_docs(out)
        if docs is None:
            nout = "NOT JSON:\n" + norm_text(side, out)
        else:
            docs = [norm_json(side, d, find_self(d)) for d in docs]
            nout = "\n".join(json.dumps(d, indent=1, sort_keys=True) for d in docs)
    elif kind == "watchjson":
        nout = norm_watch_json(side, out)
    elif kind == "table":
        nout = norm_table(side, out)
    elif kind == "members":
        nout = norm_members(side, out)
    elif kind == "hashkv":
        nout = norm_hashkv(side, out)
    elif kind == "status":
        nout = norm_status(side, out)
    else:
        nout = norm_text(side, out)
    return "exit: %s\n--- stdout\n%s\n--- stderr\n%s\n" % (rc, nout, norm_stderr(side, err))


def main():
    if sys.argv[1] == "--dump":  # normalize.py --dump DIR: every step as compared
        side = Side(sys.argv[2])
        for name, kind, cmd in side.steps:
            print("=== %s (%s): %s" % (name, kind, cmd))
            print(normalize(side, name, kind))
        return 0
    oracle, gateway = Side(sys.argv[1]), Side(sys.argv[2])
    expected = {}
    for line in open(sys.argv[3]):
        if "\t" in line:
            k, why = line.rstrip("\n").split("\t", 1)
            expected[k] = why
    gsteps = {n: (k, c) for n, k, c in gateway.steps}
    same = diff = exp_diff = 0
    for name, kind, cmd in oracle.steps:
        short = name.split("-", 1)[1]
        a = normalize(oracle, name, kind)
        if name not in gsteps:
            b, gcmd = "(step not run)\n", cmd
        else:
            b = normalize(gateway, name, kind)
            gcmd = gsteps[name][1]
        if a == b:
            same += 1
            if short in expected:
                print("NOTE %s: listed as expected-different (%s) but the outputs are the same" % (short, expected[short]))
            continue
        label = "EXPECTED-DIFFERENT" if short in expected else "DIFFERENT"
        print("=== %s %s" % (label, short))
        if short in expected:
            print("    reason: %s" % expected[short])
            exp_diff += 1
        else:
            diff += 1
        print("    oracle:  ETCDCTL_API=3 etcdctl --endpoints %s %s" % (oracle.endpoint, cmd.split(" ", 1)[1]))
        print("    gateway: ETCDCTL_API=3 etcdctl --endpoints %s %s" % (gateway.endpoint, gcmd.split(" ", 1)[1]))
        stdin = os.path.join(gateway.dir, name + ".stdin")
        if os.path.exists(stdin):
            print("    with stdin (%s):" % stdin)
            for l in open(stdin).read().splitlines():
                print("      | " + l)
        sys.stdout.writelines(
            "    " + l if l.endswith("\n") else "    " + l + "\n"
            for l in difflib.unified_diff(a.splitlines(True), b.splitlines(True), "etcd", "keel-gateway", n=2)
        )
    print("compat etcdctl: %d passed, %d failed, %d expected-different" % (same, diff, exp_diff))
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
