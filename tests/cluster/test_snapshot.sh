#!/usr/bin/env bash
# keelctl snapshot save / status / restore end to end: a real 3-member cluster with history
# (overwrites, deletes, a txn, a lease with keys, a compaction), a snapshot saved from its
# leader, checked with status, restored into three new data dirs of a new cluster (other
# addresses, so another cluster id), started with real keeld processes: every key, value,
# create/mod revision, version and lease, the revisions above the compaction and the
# compaction itself must be the same, and the new cluster takes writes at the next revision.
# Files cut short or altered, a restore into an existing data dir and a save from several
# endpoints are refused with a message saying what is wrong, and leave nothing behind.
#
#   test_snapshot.sh KEELD KEELCTL
#
# Uses the 127.0.x.1 blocks 151..153 (the cluster) and 156..158 (the restored one).
set -euo pipefail
KEELD=${1:?usage: test_snapshot.sh KEELD KEELCTL}
CTL=${2:?usage: test_snapshot.sh KEELD KEELCTL}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../gateway/compat/lib.sh
. "$HERE/../gateway/compat/lib.sh"

compat_init snapshot 151
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || compat_skip "python3 is not installed"


compat_start_keel "$KEELD"
ctl() { "$CTL" --endpoints "$KEEL_ENDPOINTS" "$@"; }

# ---- history: 200 keys, overwrites, deletes, a txn, a lease with two keys, a compaction
for i in $(seq 1 200); do printf 'put key%03d value-%d\n' "$i" "$i"; done >"$COMPAT_DIR/puts"
while read -r _ k v; do ctl put "$k" "$v" >/dev/null; done <"$COMPAT_DIR/puts"
for i in $(seq 1 50); do ctl put "key$(printf %03d "$i")" "second-$i" >/dev/null; done
compact_at=$(ctl put key001 third -w json | py 'j["header"]["revision"]')
for i in $(seq 190 200); do ctl del "key$i" >/dev/null; done
lease=$(ctl lease grant 600 | awk '{print $2}')
ctl put --lease "$lease" leased-a A >/dev/null
ctl put --lease "$lease" leased-b B >/dev/null
ctl txn --compare 'value("key002") = "second-2"' --then 'put key002 from-txn' --then 'del key003' \
    >/dev/null
ctl compaction "$compact_at" >/dev/null
past=$((compact_at + 5))
rev=$(ctl put last one -w json | py 'j["header"]["revision"]')
compat_log "history written up to revision $rev (compacted at $compact_at)"

leader=$(ctl endpoint status -w json | py '[e["Endpoint"] for e in j if e["Status"]["leader"] == e["Status"]["header"]["member_id"]][0]')

# ---- save
check "save from several endpoints is a usage error" "2" \
    "$(ctl snapshot save "$COMPAT_DIR/x.snap" >/dev/null 2>&1; echo $?)"
out=$("$CTL" --endpoints "$leader" snapshot save "$COMPAT_DIR/s.snap")
check "save says where" "Snapshot saved at $COMPAT_DIR/s.snap" "$out"
check "no .part left" "" "$(ls "$COMPAT_DIR"/*.part 2>/dev/null || true)"
st=$("$CTL" snapshot status -w json "$COMPAT_DIR/s.snap")
check "status: the revision of the last write" "$rev" "$(printf '%s' "$st" | py 'j["revision"]')"
live=$(ctl get "" --from-key --count-only -w json | py 'j["count"]')
check "status: the live keys" "$live" "$(printf '%s' "$st" | py 'j["totalKey"]')"
check "status: the compaction" "$compact_at" "$(printf '%s' "$st" | py 'j["compactRevision"]')"
check "status: one lease" "1" "$(printf '%s' "$st" | py 'j["leases"]')"
contains "status simple: hash, revision, keys, size" ", $rev, $live, " \
    "$("$CTL" snapshot status "$COMPAT_DIR/s.snap")"

# ---- damaged files are refused, by status and by restore, and leave nothing behind
size=$(stat -c %s "$COMPAT_DIR/s.snap")
head -c $((size / 2)) "$COMPAT_DIR/s.snap" >"$COMPAT_DIR/cut.snap"
cp "$COMPAT_DIR/s.snap" "$COMPAT_DIR/altered.snap"
printf 'X' | dd of="$COMPAT_DIR/altered.snap" bs=1 seek=$((size / 3)) conv=notrunc 2>/dev/null
# etcd's shape (what etcdctl snapshot save through keel-gateway writes): the copy, then its
# SHA-256; the same copy altered is refused.
head -c $((size - 48)) "$COMPAT_DIR/s.snap" >"$COMPAT_DIR/etcd.snap"
"$PY" -c 'import hashlib, sys
d = open(sys.argv[1], "rb").read()
open(sys.argv[1], "ab").write(hashlib.sha256(d).digest())' "$COMPAT_DIR/etcd.snap"
st=$("$CTL" snapshot status "$COMPAT_DIR/etcd.snap" -w json) || bad "status of etcd.snap failed"
check "status of the etcd-shaped file: the revision" "$rev" "$(printf '%s' "$st" | py 'j["revision"]')"
cp "$COMPAT_DIR/etcd.snap" "$COMPAT_DIR/etcd-altered.snap"
printf 'X' | dd of="$COMPAT_DIR/etcd-altered.snap" bs=1 seek=$((size / 3)) conv=notrunc 2>/dev/null
for f in cut altered etcd-altered; do
    out=$("$CTL" snapshot status "$COMPAT_DIR/$f.snap" 2>&1) && bad "status of $f.snap succeeded"
    want="is not a complete keel snapshot"
    [ $f = altered ] && want="is damaged or altered"
    contains "status refuses $f.snap" "$want" "$out"
    out=$("$CTL" snapshot restore "$COMPAT_DIR/$f.snap" --name r1 \
        --initial-cluster r1=127.0.156.1:1 --data-dir "$COMPAT_DIR/$f-dir" 2>&1) &&
        bad "restore of $f.snap succeeded"
    contains "restore refuses $f.snap" "$want" "$out"
    check "no data dir from $f.snap" "no" "$([ -e "$COMPAT_DIR/$f-dir" ] && echo yes || echo no)"
done

# ---- restore into a new cluster elsewhere, and start it
port=$(compat_free_port 127.0.156.1 35110) || compat_die "no free port"
initial=""
for i in 1 2 3; do initial+="${initial:+,}r$i=127.0.$((155 + i)).1:$((port + 1))@z$i"; done
for i in 1 2 3; do
    "$CTL" snapshot restore "$COMPAT_DIR/s.snap" --name "r$i" --initial-cluster "$initial" \
        --data-dir "$COMPAT_DIR/restored-r$i" >/dev/null
done
out=$("$CTL" snapshot restore "$COMPAT_DIR/s.snap" --name r1 --initial-cluster "$initial" \
    --data-dir "$COMPAT_DIR/restored-r1" 2>&1) && bad "restore over an existing data dir succeeded"
contains "restore refuses an existing data dir" "exists" "$out"
NEW_EPS=
for i in 1 2 3; do
    host=127.0.$((155 + i)).1
    NEW_EPS+="${NEW_EPS:+,}$host:$port"
    "$KEELD" --name "r$i" --data-dir "$COMPAT_DIR/restored-r$i" --listen-client "$host:$port" \
        --listen-peer "$host:$((port + 1))" --initial-cluster "$initial" \
        >"$COMPAT_DIR/restored-r$i.log" 2>&1 &
    COMPAT_PIDS+=($!)
done
compat_wait 60 "$CTL" --endpoints "$NEW_EPS" get last || compat_die "the restored cluster did not serve in 60 s"
nctl() { "$CTL" --endpoints "$NEW_EPS" "$@"; }

# ---- the same state: keys, values, revisions, versions, leases; history above the compaction
kvs() { "$@" get "" --from-key -w json | py 'json.dumps(j.get("kvs", []), sort_keys=True)'; }
old=$(kvs ctl)
new=$(kvs nctl)
check "every key, value, revision, version and lease" "$old" "$new"
check "$live keys" "$live" "$(printf '%s' "$new" | py 'len(j)')"
check "the lease and its keys" "$(ctl lease timetolive "$lease" --keys -w json | py 'sorted(j["keys"])')" \
    "$(nctl lease timetolive "$lease" --keys -w json | py 'sorted(j["keys"])')"
check "a past revision above the compaction" \
    "$(ctl get "" --from-key --rev "$past" -w json | py 'json.dumps(j.get("kvs", []), sort_keys=True)')" \
    "$(nctl get "" --from-key --rev "$past" -w json | py 'json.dumps(j.get("kvs", []), sort_keys=True)')"
out=$(nctl get key001 --rev $((compact_at - 1)) 2>&1) && bad "a compacted revision was served"
contains "below the compaction is compacted" "compacted" "$out"
check "another cluster id" "yes" "$([ "$(ctl get last -w json | py 'j["header"]["cluster_id"]')" != \
    "$(nctl get last -w json | py 'j["header"]["cluster_id"]')" ] && echo yes || echo no)"
check "writes go on at the next revision" "$((rev + 1))" "$(nctl put after restore -w json | py 'j["header"]["revision"]')"
check "the restored members" "r1 r2 r3" "$(nctl member list -w json | py '" ".join(sorted(m["name"] for m in j["members"]))')"

compat_done
