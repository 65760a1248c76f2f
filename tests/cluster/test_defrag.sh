#!/usr/bin/env bash
# keelctl defrag with real keeld processes: a store grown to tens of MB and then mostly deleted
# and compacted is defragmented on every member while 64 clients keep putting. No request may
# fail, every member's store file must shrink, and every member must hold the same data after
# it: the keys kept, and everything written during the defragmentation. defrag --cluster
# reaches every member through the member list.
#
#   test_defrag.sh KEELD KEELCTL KEEL_BENCH
#
# Uses the 127.0.x.1 blocks 176..178.
set -euo pipefail
KEELD=${1:?usage: test_defrag.sh KEELD KEELCTL KEEL_BENCH}
CTL=${2:?usage: test_defrag.sh KEELD KEELCTL KEEL_BENCH}
BENCH=${3:?usage: test_defrag.sh KEELD KEELCTL KEEL_BENCH}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../gateway/compat/lib.sh
. "$HERE/../gateway/compat/lib.sh"

compat_init defrag 176
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || compat_skip "python3 is not installed"

compat_start_keel "$KEELD"
ctl() { "$CTL" --endpoints "$KEEL_ENDPOINTS" "$@"; }
sizes() { ctl endpoint status -w json | py '" ".join(str(e["Status"]["dbSize"]) for e in sorted(j, key=lambda e: e["Endpoint"]))'; }

# ---- a store of tens of MB, then mostly deleted and compacted
"$BENCH" --endpoints "$KEEL_ENDPOINTS" put --sequential-keys --total 40000 --key-space-size 40000 \
    --conns 4 --clients 32 --key-size 8 --val-size 1024 --json >"$COMPAT_DIR/fill.json" ||
    compat_die "the fill failed"
ctl del "" --from-key >/dev/null
for i in $(seq 1 20); do ctl put "kept/$i" "value-$i" >/dev/null; done
rev=$(ctl get kept/1 -w json | py 'j["header"]["revision"]')
ctl compaction "$rev" >/dev/null
before=$(sizes)
compat_log "store files before: $before bytes"

# ---- defrag every member while 64 clients put (at 3000 puts/s: the store must not grow back
# faster than the check below can tell)
"$BENCH" --endpoints "$KEEL_ENDPOINTS" put --duration 6 --rate 3000 --conns 8 --clients 64 \
    --key-size 8 --val-size 256 --key-space-size 5000 --json >"$COMPAT_DIR/load.json" \
    2>"$COMPAT_DIR/load.err" &
load=$!
COMPAT_PIDS+=("$load")
sleep 1.5
out=$(ctl --timeout 120s defrag 2>&1) || bad "defrag failed: $out"
check "every member defragmented" "3" "$(printf '%s\n' "$out" | grep -c '^Finished defragmenting etcd member')"
after=$(sizes)
wait "$load" || bad "the load generator failed: $(tail -c 300 "$COMPAT_DIR/load.err")"
check "no request failed during it" "{}" "$(py 'json.dumps(j["errors"])' <"$COMPAT_DIR/load.json")"
compat_log "load during the defragmentation: $(py '"%d puts/s, p99 %.1f ms, slowest %.1f ms" % (j["summary"]["rps"], j["summary"]["p99_ms"], j["summary"]["slowest_ms"])' <"$COMPAT_DIR/load.json")"
compat_log "store files after: $after bytes"
check "every member's file at least halved" "yes" "$("$PY" -c '
import sys
b = [int(x) for x in sys.argv[1].split()]
a = [int(x) for x in sys.argv[2].split()]
print("yes" if len(a) == 3 and all(x * 2 <= y for x, y in zip(a, b)) else "no")' "$before" "$after")"

# ---- every member holds the same data: the kept keys and everything written meanwhile
last=$(ctl put last x -w json | py 'j["header"]["revision"]')
same() { # every member's serializable view of everything, once it has applied `last`
    local ep
    for ep in ${KEEL_ENDPOINTS//,/ }; do
        "$CTL" --endpoints "$ep" get "" --from-key --consistency s -w json | py 'json.dumps([j["header"]["revision"] >= '"$last"', j.get("kvs", [])], sort_keys=True)' | md5sum
    done | sort -u | wc -l
}
end=$((SECONDS + 20))
while [ "$(same)" != 1 ] && [ $SECONDS -lt $end ]; do sleep 0.3; done
check "every member holds the same keys, values and revisions" "1" "$(same)"
check "the kept keys are there" "20" "$(ctl get kept/ --prefix --count-only -w json | py 'j["count"]')"
check "writes go on" "OK" "$(ctl put after defrag)"

# ---- --cluster: every member, found through the member list
out=$(ctl --timeout 120s defrag --cluster 2>&1) || bad "defrag --cluster failed: $out"
check "defrag --cluster reached every member" "3" "$(printf '%s\n' "$out" | grep -c '^Finished defragmenting etcd member')"

compat_done
