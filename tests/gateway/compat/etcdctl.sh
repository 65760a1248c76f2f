#!/usr/bin/env bash
# etcdctl 3.4 (Debian etcd-client, unmodified) against a real etcd 3.4 (3 members, the oracle)
# and against keel-gateway in front of a real 3-member keel cluster: the same command list on
# both, outputs (stdout, stderr, exit code) normalized (tests/gateway/compat/normalize.py) and
# compared. Prints every difference; exits 1 on any that is not listed in EXPECTED_DIFFERENT
# below, 77 when etcd, etcdctl or python3 is missing.
#
#   tests/gateway/compat/etcdctl.sh KEEL_GATEWAY KEELD KEELCTL
#
# Revisions are compared relative to a marker put at the start of each run; cluster/member ids,
# raft terms and indexes, db sizes, versions, timings, endpoints and lease ids are replaced by
# placeholders (lease ids by the order they were first seen, so a wrong id still shows).
#
# COMPAT_AGAINST_ETCD=1 compares etcd with a second etcd instead (a check of the normalization:
# nothing may differ but the steps listed below); KEEL_KEEP_TEST_DATA=1 keeps every output.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh" || exit 1

[ $# -eq 3 ] || { echo "usage: $0 KEEL_GATEWAY KEELD KEELCTL" >&2; exit 2; }
gateway=$1
keeld=$2
keelctl=$3

# Steps whose outputs legitimately differ, with the reason. Their differences are printed but do
# not fail the test; one that turns out equal is reported so that the entry can go.
declare -A EXPECTED_DIFFERENT=(
    [endpoint-hashkv]="keel keeps no consistent hash of its store (issue 13: HashKV where keel has it): Unimplemented"
    [endpoint-status-cluster]="MemberList gives every member the gateway's own URL (issue 13), so --cluster asks the one gateway three times, and each answer comes from the leader"
)

command -v etcd >/dev/null || compat_skip "no etcd (Debian etcd-server)"
command -v etcdctl >/dev/null || compat_skip "no etcdctl (Debian etcd-client)"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
command -v "$PY" >/dev/null || compat_skip "no python3 (for normalizing outputs)"
ctl_version=$(etcdctl version 2>/dev/null)
[[ "$ctl_version" == "etcdctl version: 3.4."* ]] || compat_skip "etcdctl is not 3.4 ($ctl_version)"

compat_init etcdctl 131

# --- the command list ----------------------------------------------------------------------------

# step NAME KIND [stdin-file] -- etcdctl args: runs etcdctl against $EP with a bounded time,
# keeps stdout, stderr and the exit code. KIND tells normalize.py how to read the output
# (text, json, watchjson, table, members, status, hashkv).
step() {
    local name=$1 kind=$2 in=/dev/null
    shift 2
    if [ "$1" != -- ]; then in=$1; shift; fi
    shift # --
    nstep=$((nstep + 1))
    local f
    f=$(printf '%s/%03d-%s' "$OUT" "$nstep" "$name")
    ETCDCTL_API=3 timeout 30 etcdctl --endpoints "$EP" --dial-timeout 5s --command-timeout 10s \
        "$@" <"$in" >"$f.out" 2>"$f.err"
    echo $? >"$f.rc"
    last=$f
    [ "$in" = /dev/null ] || cp "$in" "$f.stdin"
    printf '%s %s %s\n' "$(basename "$f")" "$kind" "etcdctl $*" >>"$OUT/manifest"
}

# The revision in the header of the last step's -w json output (0 when there is none).
last_rev() {
    "$PY" -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["header"]["revision"])
except Exception: print(0)' "$last.out"
}

# A background watch: bg_watch NAME SENTINEL -- args. Its output is complete once SENTINEL shows
# (bounded); collected into the numbered files like any step.
bg_watch_start() { # NAME KIND -- watch args
    local name=$1 kind=$2
    shift 3
    nstep=$((nstep + 1))
    wfile=$(printf '%s/%03d-%s' "$OUT" "$nstep" "$name")
    ETCDCTL_API=3 timeout 60 etcdctl --endpoints "$EP" --dial-timeout 5s watch "$@" \
        >"$wfile.out" 2>"$wfile.err" &
    wpid=$!
    printf '%s %s %s\n' "$(basename "$wfile")" "$kind" "etcdctl watch $* (background)" >>"$OUT/manifest"
}
bg_watch_collect() { # SENTINEL: a line the watch prints last
    local sentinel=$1 end=$((SECONDS + 30))
    while [ $SECONDS -lt $end ] && ! grep -qx -- "$sentinel" "$wfile.out" 2>/dev/null; do
        compat_alive "$wpid" || break
        sleep 0.2
    done
    grep -qx -- "$sentinel" "$wfile.out" || echo "(sentinel '$sentinel' not seen within 30 s)" >>"$wfile.err"
    kill -TERM "$wpid" 2>/dev/null
    wait "$wpid" 2>/dev/null
    echo "watch-collected" >"$wfile.rc"
}

bg_watch_collect_json() { # VALUE: the last event's value (its base64 shows in the JSON)
    local b64
    b64=$(printf '%s' "$1" | base64)
    bg_watch_collect_pattern "\"value\":\"$b64\""
}
bg_watch_collect_pattern() { # a pattern the last output line contains
    local pat=$1 end=$((SECONDS + 30))
    while [ $SECONDS -lt $end ] && ! grep -qF -- "$pat" "$wfile.out" 2>/dev/null; do
        compat_alive "$wpid" || break
        sleep 0.2
    done
    grep -qF -- "$pat" "$wfile.out" || echo "('$pat' not seen within 30 s)" >>"$wfile.err"
    kill -TERM "$wpid" 2>/dev/null
    wait "$wpid" 2>/dev/null
    echo "watch-collected" >"$wfile.rc"
}

txn_file() { # NAME: writes etcdctl's txn syntax from stdin to $OUT/NAME.txn
    cat >"$OUT/$1.txn"
}

run_suite() {
    EP=$1
    OUT=$2
    nstep=0
    mkdir -p "$OUT"
    : >"$OUT/manifest"

    step marker json -- put /compat/marker m -w json
    local r0
    r0=$(last_rev)
    echo "$r0" >"$OUT/r0"

    # put / get
    step put-a text -- put /c/a 1
    step put-b json -- put /c/b 2 -w json
    step put-c text -- put /c/c 3
    step put-d text -- put /c/d 4
    step put-b2 text -- put /c/b 22
    step put-other text -- put /d/x 9
    step put-prev text -- put --prev-kv /c/a 11
    step put-prev-json json -- put --prev-kv /c/c 33 -w json
    step put-empty-value text -- put /c/e ''
    step put-no-key text -- put
    step get-one text -- get /c/a
    step get-one-json json -- get /c/a -w json
    step get-missing text -- get /c/nope
    step get-missing-json json -- get /c/nope -w json
    step get-range text -- get /c/a /c/c
    step get-prefix text -- get --prefix /c/
    step get-prefix-json json -- get --prefix /c/ -w json
    step get-from-key text -- get --from-key /c/c
    step get-from-key-json json -- get --from-key /c/c -w json
    step get-limit-json json -- get --prefix /c/ --limit 2 -w json
    step get-rev text -- get /c/a --rev=$((r0 + 1))
    step get-rev-json json -- get --prefix /c/ --rev=$((r0 + 3)) -w json
    step get-future-rev text -- get /c/a --rev=$((r0 + 1000))
    step get-keys-only text -- get --prefix /c/ --keys-only
    step get-keys-only-json json -- get --prefix /c/ --keys-only -w json
    step get-count-only-json json -- get --prefix /c/ --count-only -w json
    step get-print-value-only text -- get /c/b --print-value-only
    step get-desc-key text -- get --prefix /c/ --order=DESCEND
    step get-sort-modify text -- get --prefix /c/ --sort-by=MODIFY --order=DESCEND
    step get-sort-create text -- get --prefix /c/ --sort-by=CREATE --order=ASCEND
    step get-sort-version-json json -- get --prefix /c/ --sort-by=VERSION --order=DESCEND -w json
    step get-sort-value text -- get --prefix /c/ --sort-by=VALUE
    step get-sort-limit-json json -- get --prefix /c/ --sort-by=MODIFY --order=DESCEND --limit 1 -w json
    step get-serializable text -- get --prefix /c/ --consistency=s
    step get-serializable-json json -- get /c/b --consistency=s -w json
    step get-empty-key text -- get ''
    step get-hex text -- get /c/a --hex
    step get-min-mod-json json -- get --prefix /c/ --keys-only --min-mod-rev=$((r0 + 5)) -w json
    step get-max-create-json json -- get --prefix /c/ --keys-only --max-create-rev=$((r0 + 2)) -w json
    step get-prefix-limit-rev-json json -- get --prefix /c/ --limit 1 --rev=$((r0 + 4)) -w json
    step get-all text -- get --from-key '' --keys-only
    step put-ignore-value text -- put /c/b --ignore-value
    step put-ignore-value-missing text -- put /c/missing --ignore-value
    head -c 2000000 /dev/zero | tr '\0' x >"$OUT/big.value"
    step put-too-large text "$OUT/big.value" -- put /c/big

    # del
    step del-prev text -- del --prev-kv /c/d
    step del-prefix-json json -- del --prefix /d/ -w json
    step del-missing text -- del /c/nope
    step del-missing-json json -- del /c/nope -w json
    step del-range-prev-json json -- del /c/e /c/f --prev-kv -w json

    # txn (etcdctl's interactive syntax on stdin): success branch, failure branch, k8s shapes
    printf '%s\n' 'mod("/c/a") > "0"' '' 'put /c/t yes' 'get /c/a' '' 'put /c/t no' '' | txn_file t1
    step txn-success text "$OUT/t1.txn" -- txn
    printf '%s\n' 'value("/c/a") = "nope"' '' 'put /c/t yes' '' 'put /c/t no' 'get /c/b' '' | txn_file t2
    step txn-failure text "$OUT/t2.txn" -- txn
    printf '%s\n' 'mod("/c/k") = "0"' '' 'put /c/k created' '' 'get /c/k' '' | txn_file t3
    step txn-create-json json "$OUT/t3.txn" -- txn -w json
    local kc
    kc=$(last_rev)
    printf '%s\n' "mod(\"/c/k\") = \"$kc\"" '' 'put /c/k updated' '' 'get /c/k' '' | txn_file t4
    step txn-update-json json "$OUT/t4.txn" -- txn -w json
    printf '%s\n' "mod(\"/c/k\") = \"$kc\"" '' 'del /c/k' '' 'get /c/k' '' | txn_file t5
    step txn-stale-delete-json json "$OUT/t5.txn" -- txn -w json
    printf '%s\n' 'version("/c/b") = "2"' 'create("/c/zz") = "0"' '' 'del --prev-kv /c/t' '' '' | txn_file t6
    step txn-multi-compare text "$OUT/t6.txn" -- txn
    printf '%s\n' 'value("/c/a") = "11"' '' 'get /c/ --prefix --keys-only' '' '' | txn_file t7
    step txn-readonly-json json "$OUT/t7.txn" -- txn -w json
    printf '%s\n' 'bogus("/c/a") = "1"' '' '' '' | txn_file t8
    step txn-bad-syntax text "$OUT/t8.txn" -- txn

    # watch: replay from a revision with prev-kv (live events after the replay), then history
    step watch-base json -- put /w/0 base -w json
    local rw
    rw=$(last_rev)
    bg_watch_start watch-prefix-rev-prevkv text -- --prefix /w/ --rev=$((rw + 1)) --prev-kv
    step w-put1 text -- put /w/1 a
    step w-put2 text -- put /w/1 b
    step w-del text -- del /w/1
    step w-put3 text -- put /w/2 c
    step w-end text -- put /w/zz watch-end
    bg_watch_collect watch-end
    bg_watch_start watch-history text -- --prefix /c/ --rev=$((r0 + 1))
    step w-hist-end text -- put /c/zzz history-end
    bg_watch_collect history-end
    bg_watch_start watch-one-key-rev text -- /c/b --rev=$((r0 + 2))
    step w-b-end text -- put /c/b b-end
    bg_watch_collect b-end
    bg_watch_start watch-json watchjson -- --prefix /w/ --rev=$((rw + 1)) -w json
    step w-json-end text -- put /w/zz json-end
    bg_watch_collect_json json-end

    # lease
    step lease-grant text -- lease grant 60
    local lid
    lid=$(sed -n 's/^lease \([0-9a-f]*\) granted.*/\1/p' "$last.out")
    lid=${lid:-0}
    step lease-put text -- put /c/l leased --lease="$lid"
    step lease-put-unknown text -- put /c/l2 v --lease=1234abcd
    step lease-keepalive-once text -- lease keep-alive --once "$lid"
    step lease-keepalive-once-json json -- lease keep-alive --once "$lid" -w json
    step lease-timetolive-keys text -- lease timetolive "$lid" --keys
    step lease-timetolive-json json -- lease timetolive "$lid" --keys -w json
    step lease-timetolive-unknown text -- lease timetolive 1234abcd
    step lease-list text -- lease list
    step lease-list-json json -- lease list -w json
    step lease-get-key-json json -- get /c/l -w json
    # The minimum TTL (etcd raises 1 to 2 with its 1000 ms election timeout); listed by no
    # later step, as it expires on its own.
    step lease-grant-min-json json -- lease grant 1 -w json
    step lease-revoke text -- lease revoke "$lid"
    step lease-get-after-revoke text -- get /c/l
    step lease-revoke-again text -- lease revoke "$lid"
    step lease-keepalive-revoked text -- lease keep-alive --once "$lid"

    # compaction
    step compact-rev json -- put /c/compact x -w json
    local rc
    rc=$(last_rev)
    step compaction text -- compaction $((r0 + 5))
    step compaction-again text -- compaction $((r0 + 5))
    step compaction-lower text -- compaction $((r0 + 2))
    step compaction-future text -- compaction $((rc + 1000))
    step get-compacted-rev text -- get /c/a --rev=$((r0 + 1))
    step get-at-compact-rev text -- get --prefix /c/ --rev=$((r0 + 5))
    step watch-compacted text -- watch /c/a --rev=$((r0 + 1))
    step compaction-physical text -- compaction --physical $((r0 + 7))
    step watch-compacted-json json -- watch /c/a --rev=$((r0 + 1)) -w json

    # lock (a session lease with keep-alives, a CREATE compare, a sorted range, a delete watch)
    step lock text -- lock /c-lock echo locked
    step lock-gone text -- get --prefix /c-lock

    # cluster and maintenance
    step member-list members -- member list
    step member-list-json json -- member list -w json
    step member-list-table table -- member list -w table
    step endpoint-status status -- endpoint status
    step endpoint-status-json json -- endpoint status -w json
    step endpoint-status-table table -- endpoint status -w table
    step endpoint-health text -- endpoint health
    step endpoint-health-json json -- endpoint health -w json
    step endpoint-health-table table -- endpoint health -w table
    step endpoint-status-cluster status -- endpoint status --cluster
    step endpoint-health-cluster text -- endpoint health --cluster
    step endpoint-hashkv hashkv -- endpoint hashkv
    step alarm-list text -- alarm list
    step defrag text -- defrag
    step member-remove-unknown text -- member remove 1234abcd
    step move-leader-self text -- move-leader 1
    step snapshot-save text -- snapshot save "$OUT/snap.db"
    step get-final-json json -- get --prefix '' -w json --keys-only
    echo "$EP" >"$OUT/endpoint"
}

# --- run it on both and compare ------------------------------------------------------------------

compat_start_etcd
compat_start_target "$gateway" "$keeld"

run_suite "$ETCD_EP" "$COMPAT_DIR/etcd"
echo "$ETCD_EPS" >"$COMPAT_DIR/etcd/other-endpoints"
run_suite "$GW_EP" "$COMPAT_DIR/gateway"
echo "$GW_EPS" >"$COMPAT_DIR/gateway/other-endpoints"
compat_alive "$GW_PID" || compat_log "keel-gateway exited during the run (see its log below)"

expected=$COMPAT_DIR/expected-different
: >"$expected"
for k in "${!EXPECTED_DIFFERENT[@]}"; do printf '%s\t%s\n' "$k" "${EXPECTED_DIFFERENT[$k]}" >>"$expected"; done
"$PY" "$here/normalize.py" "$COMPAT_DIR/etcd" "$COMPAT_DIR/gateway" "$expected"
status=$?
# The file etcdctl saved through the gateway is keel's snapshot (then etcd's SHA-256 trailer):
# keelctl checks its digest and reads it as a store.
snap=$COMPAT_DIR/gateway/snap.db
if ! "$keelctl" snapshot status "$snap" -w json >"$COMPAT_DIR/snap-status.json" 2>&1; then
    compat_log "keelctl snapshot status of what etcdctl saved through keel-gateway failed: $(cat "$COMPAT_DIR/snap-status.json")"
    status=1
elif ! grep -q '"totalKey": *[1-9]' "$COMPAT_DIR/snap-status.json"; then
    compat_log "the snapshot etcdctl saved through keel-gateway holds no keys: $(cat "$COMPAT_DIR/snap-status.json")"
    status=1
fi
# Clients that go away mid-stream: a few MB in the store, saves killed after a moment (some
# cut the stream, the quick ones may finish), then the gateway must still be there and a whole
# save must still work.
if [ -z "${COMPAT_AGAINST_ETCD:-}" ]; then
    head -c 196608 /dev/urandom | base64 -w0 >"$COMPAT_DIR/big.value"
    for i in $(seq 1 24); do
        "$keelctl" --endpoints "$KEEL_ENDPOINTS" put "big/$i" <"$COMPAT_DIR/big.value" >/dev/null ||
            { compat_log "put big/$i failed"; status=1; }
    done
    for t in 0.05 0.1 0.2; do
        ETCDCTL_API=3 timeout "$t" etcdctl --endpoints "$GW_EP" snapshot save \
            "$COMPAT_DIR/cut.db" >/dev/null 2>&1
    done
    # A slow reader of the JSON gateway's stream that leaves after 3 s (of some 9 MB at
    # 1 MB/s): surely cut mid-stream, and surely after the first bytes, however slow the machine.
    if command -v curl >/dev/null; then
        cut=$(curl -s --limit-rate 1M --max-time 3 -X POST "$GW_EP/v3/maintenance/snapshot" \
            -d '{}' | wc -c)
        [ "$cut" -gt 0 ] || { compat_log "the JSON gateway's snapshot stream sent nothing"; status=1; }
    fi
    if ! compat_alive "$GW_PID"; then
        compat_log "keel-gateway died when snapshot clients went away"
        status=1
    elif ! ETCDCTL_API=3 timeout 60 etcdctl --endpoints "$GW_EP" snapshot save "$COMPAT_DIR/whole.db" \
        >/dev/null 2>"$COMPAT_DIR/whole.err" ||
        ! "$keelctl" snapshot status "$COMPAT_DIR/whole.db" >/dev/null 2>>"$COMPAT_DIR/whole.err"; then
        compat_log "a save after clients went away failed: $(tail -c 600 "$COMPAT_DIR/whole.err")"
        status=1
    fi
fi
compat_alive "$GW_PID" || { compat_log "keel-gateway is not running at the end"; status=1; }
compat_stop_gateway || status=1
exit $status
