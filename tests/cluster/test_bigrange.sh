#!/usr/bin/env bash
# Ranges larger than one frame, with real keeld processes (issue 14): a member sends them in
# pieces and the client joins them. 6,000 keys of 1 KiB (about 6 MiB, several pieces) are read
# whole: every key once, in order, with its value, the count and the revision right; keys-only,
# count-only, a limit (more set), a serializable read from a follower and a past revision too.
# While a writer overwrites every key, each big read is one snapshot: no key-value newer than
# its header's revision, and the same read at that revision is identical. Through keel-gateway,
# etcdctl (etcd's own client, gRPC) gets the same answers. Then keelctl compaction of that long
# history (about 24,000 revisions) goes through the log in steps (the leader logs how many), and
# every member ends at the revision asked.
#
#   test_bigrange.sh KEELD KEELCTL KEEL_BENCH [KEEL_GATEWAY]
#
# Uses the 127.0.x.1 blocks 181..185.
set -euo pipefail
KEELD=${1:?usage: test_bigrange.sh KEELD KEELCTL KEEL_BENCH [KEEL_GATEWAY]}
CTL=${2:?usage}
BENCH=${3:?usage}
GW=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../gateway/compat/lib.sh
. "$HERE/../gateway/compat/lib.sh"

compat_init bigrange 181
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || compat_skip "python3 is not installed"
N=6000

compat_start_keel "$KEELD" 0
ctl() { "$CTL" --endpoints "$KEEL_ENDPOINTS" --timeout 30s "$@"; }
load() { # every key 0..N-1 (8 bytes, big-endian) once, values of 1 KiB
    "$BENCH" --endpoints "$KEEL_ENDPOINTS" put --sequential-keys --total $N --key-space-size $N \
        --key-size 8 --val-size 1024 --conns 2 --clients 16 >"$COMPAT_DIR/load.out" 2>&1 ||
        compat_die "load failed: $(tail -n 5 "$COMPAT_DIR/load.out")"
}
# summary < get -w json: "kvs count more revision max_mod values_ok ordered"
summary() {
    "$PY" -c '
import base64, json, sys
j = json.load(sys.stdin)
kvs = j.get("kvs", [])
keys = [base64.b64decode(kv["key"]) for kv in kvs]
mods = [int(kv["mod_revision"]) for kv in kvs]
vals = [len(base64.b64decode(kv.get("value", ""))) for kv in kvs]
print(len(kvs), j.get("count", 0), str(j.get("more", False)).lower(), j["header"]["revision"],
      max(mods) if mods else 0, "all1024" if vals and set(vals) == {1024} else "novalues" if not any(vals) else "mixed",
      "ordered" if all(a < b for a, b in zip(keys, keys[1:])) else "unordered")'
}

load
whole=$(ctl get "" --from-key -w json | summary)
read -r n count more rev maxmod values order <<<"$whole"
check "a 6 MiB range: every key once" "$N $N false" "$n $count $more"
check "in key order, every value whole" "all1024 ordered" "$values $order"
check "its revision is the newest key-value's" "$rev" "$maxmod"
r1=$rev
read -r n count more _ _ values _ <<<"$(ctl get "" --from-key --keys-only -w json | summary)"
check "keys only" "$N $N novalues" "$n $count $values"
read -r n count more _ <<<"$(ctl get "" --from-key --limit 5000 -w json | summary)"
check "a limit inside a range of several pieces: more, and the whole count" "5000 $N true" "$n $count $more"
read -r n count _ <<<"$(ctl get "" --from-key --count-only -w json | summary)"
check "count only" "0 $N" "$n $count"
follower=${KEEL_ENDPOINTS##*,}
read -r n count _ _ _ values order <<<"$("$CTL" --endpoints "$follower" --timeout 30s get "" --from-key \
    --consistency s -w json | summary)"
check "serializable, from one member" "$N $N all1024 ordered" "$n $count $values $order"

# A writer overwrites every key while big ranges are read: each is a snapshot.
"$BENCH" --endpoints "$KEEL_ENDPOINTS" put --sequential-keys --total $((3 * N)) --key-space-size $N \
    --key-size 8 --val-size 1024 --conns 2 --clients 8 >"$COMPAT_DIR/writer.out" 2>&1 &
writer=$!
COMPAT_PIDS+=("$writer")
snapshots=0
for i in 1 2 3 4 5 6; do
    compat_alive "$writer" || break
    ctl get "" --from-key -w json >"$COMPAT_DIR/during.json"
    read -r n count _ rev maxmod _ order < <(summary <"$COMPAT_DIR/during.json")
    if [ "$n $count $order" != "$N $N ordered" ] || [ "$maxmod" -gt "$rev" ]; then
        bad "read $i during writes: $n key-values of $count, $order, newest $maxmod at revision $rev"
        continue
    fi
    # The same range read at the revision the first read reported: the same key-values.
    ctl get "" --from-key --rev "$rev" -w json >"$COMPAT_DIR/again.json"
    same=$("$PY" -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
print("same" if a["kvs"] == b["kvs"] else "differ")' "$COMPAT_DIR/during.json" "$COMPAT_DIR/again.json")
    [ "$same" = same ] || bad "read $i during writes differs from the read at its revision $rev"
    snapshots=$((snapshots + 1))
done
wait "$writer" || bad "the writer failed: $(tail -n 3 "$COMPAT_DIR/writer.out")"
[ "$snapshots" -ge 2 ] && ok "$snapshots big reads during writes were each one snapshot" ||
    bad "only $snapshots big reads ran while the writer did"
read -r n count _ _ maxmod _ <<<"$(ctl get "" --from-key --rev "$r1" -w json | summary)"
check "a past revision, read whole" "$N $N $r1" "$n $count $maxmod"

# A client's compaction of the long history: in steps, every member at the end.
rev=$(ctl get "" --from-key --count-only -w json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
target=$((rev - 100))
check "compaction answers" "compacted revision $target" "$(ctl compaction "$target")"
compacted() { ctl endpoint status -w json | "$PY" -c 'import json,sys; print(" ".join(str(e["Status"].get("compactRevision", 0)) for e in json.load(sys.stdin)))'; }
end=$((SECONDS + 20))
while [ "$(compacted)" != "$target $target $target" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
check "every member compacted to it" "$target $target $target" "$(compacted)"
steps=$(grep -ho "compaction to revision $target for a client: the last of [0-9]* steps" \
    "$COMPAT_DIR"/keel-m*.log | awk '{print $(NF-1)}' | head -1)
check "it went in steps of 500 revisions" "yes" "$([ "${steps:-0}" -ge $((target / 500)) ] && echo yes || echo no)"
out=$(ctl get "" --from-key --rev $((target - 1)) 2>&1) && bad "a compacted revision was served"
contains "below it is compacted" "compacted" "$out"

# etcd's own client through keel-gateway gets the whole answers too.
if [ -n "$GW" ]; then
    if command -v etcdctl >/dev/null; then
        compat_start_gateway "$GW"
        e() { ETCDCTL_API=3 etcdctl --endpoints "$GW_EP" --command-timeout 30s "$@"; }
        read -r n count _ _ _ values order <<<"$(e get "" --from-key -w json | summary)"
        check "etcdctl through the gateway: the whole range" "$N $N all1024 ordered" "$n $count $values $order"
        read -r n count more _ <<<"$(e get "" --from-key --keys-only --limit 5500 -w json | summary)"
        check "etcdctl through the gateway: keys only, a limit" "5500 $N true" "$n $count $more"
        compat_stop_gateway || bad "keel-gateway did not stop cleanly"
    else
        compat_log "SKIP (part): etcdctl is not installed: the gateway part did not run"
    fi
fi
compat_done
