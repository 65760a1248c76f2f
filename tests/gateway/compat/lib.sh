# Shared by the gateway compatibility tests (sourced, not run): starts a real etcd 3.4 (the
# oracle), a 3-member keel cluster and keel-gateway in front of it, each by PID, and stops them
# all on exit, whatever the exit (trap). Every wait is bounded; nothing waits by a fixed sleep
# alone.
#
#   compat_init NAME BLOCK      scratch dir, trap; BLOCK: the first of the five 127.0.x.1 blocks
#                               this test owns (keel members on BLOCK..BLOCK+2, etcd on BLOCK+3,
#                               the gateway on BLOCK+4) -- no other test uses them
#   compat_skip MSG             exit 77 (ctest: skipped)
#   compat_start_etcd           3-member etcd; sets ETCD_EP (http://host:port of the leader)
#   compat_start_keel KEELD [OFF [FLAGS...]]
#                               3 keeld members on blocks BLOCK+OFF.. (default 0), with extra
#                               keeld FLAGS; sets KEEL_ENDPOINTS (a,b,c)
#   compat_start_gateway GW     keel-gateway in front of them; sets GW_EP (http://host:port)
#   compat_stop_gateway         SIGTERM it; fails unless it exits 0 with no sanitizer report
#   compat_start_target GW KEELD  keel + gateway; or, with COMPAT_AGAINST_ETCD=1 (a check of the
#                               test itself: two oracles must compare equal), a second etcd
#                               on the gateway's block; sets GW_EP, GW_PID
#
# Both run with a 1 s periodic watch progress notification (etcd's default is 10 min; the tests
# wait for one).
#
# Blocks in use by the compat tests: etcdctl 131..135, clientv3 136..140, etcd3gw 141..145
# (tests/lib uses 1..7, the fault tests 111..115, the crash tests 121..123, test_http1.sh
# 146..150, etcdctl_tls.sh 151..155, etcdctl_auth.sh 156..160).

export ETCDCTL_API=3
COMPAT_PIDS=()
COMPAT_DIR=
COMPAT_NAME=

compat_log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "${COMPAT_NAME:-$(basename "$0")}" "$*" >&2; }
compat_die() { compat_log "$*"; exit 1; }
compat_skip() { compat_log "SKIP: $*"; exit 77; }

# End every process this test started (by PID): TERM, a bounded wait, then KILL. On failure,
# print the end of each log so that a CI failure says what the servers saw.
# Checks that count failures and go on (compat_done ends the test with them):
#   ok MSG, bad MSG, check NAME WANT GOT (equal), contains NAME NEEDLE HAYSTACK; py EXPR prints
#   EXPR of the JSON on stdin (as j).
COMPAT_FAIL=0
ok() { compat_log "ok: $*"; }
bad() { COMPAT_FAIL=$((COMPAT_FAIL + 1)); compat_log "FAIL: $*"; }
check() { if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: want [$2], got [$3]"; fi; }
contains() { case "$3" in *"$2"*) ok "$1" ;; *) bad "$1: [$2] not in [$3]" ;; esac; }
py() { "${PY:-python3}" -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
compat_done() {
    [ "$COMPAT_FAIL" -eq 0 ] || compat_die "$COMPAT_FAIL check(s) failed"
    compat_log "all checks passed"
}

compat_cleanup() {
    local rc=$? p i
    trap - EXIT INT TERM
    for p in "${COMPAT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 1 100); do
        local alive=0
        for p in "${COMPAT_PIDS[@]}"; do [ -d "/proc/$p" ] && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "${COMPAT_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${COMPAT_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # What a test set up outside its processes (a mount), undone once they are gone.
    if [ -n "${COMPAT_AFTER_STOP:-}" ]; then "$COMPAT_AFTER_STOP" || true; fi
    if [ -n "$COMPAT_DIR" ] && [ -d "$COMPAT_DIR" ]; then
        if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
            for f in "$COMPAT_DIR"/*.log; do
                [ -f "$f" ] || continue
                echo "--- tail of $f" >&2
                tail -n 15 "$f" >&2
            done
        fi
        if [ -n "${KEEL_KEEP_TEST_DATA:-}" ]; then
            echo "test data kept in $COMPAT_DIR" >&2
        else
            rm -rf "$COMPAT_DIR"
        fi
    fi
    exit $rc
}

compat_init() {
    COMPAT_NAME=$1
    COMPAT_BLOCK=$2
    COMPAT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/keel-compat-$COMPAT_NAME.XXXXXX")
    trap compat_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# A port free on host, tried from start upwards (bounded), so that ports stay in the range this
# test was given when they are free.
compat_free_port() {
    local host=$1 start=$2 p
    for p in $(seq "$start" $((start + 60))); do
        if ! (exec 3<>"/dev/tcp/$host/$p") 2>/dev/null; then
            # Nothing listens; bindable unless in TIME_WAIT on a listener, which a connect
            # cannot see but ss can.
            if ! ss -Htln "sport = :$p" 2>/dev/null | grep -q "$host:$p"; then
                echo "$p"
                return 0
            fi
        fi
    done
    return 1
}

# Wait (bounded, seconds) until cmd succeeds.
compat_wait() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

compat_alive() { [ -d "/proc/$1" ]; }

compat_start_etcd() { # [BLOCK-OFFSET, default 3]
    local host=127.0.$((COMPAT_BLOCK + ${1:-3})).1 i initial="" base
    base=$(compat_free_port "$host" 35000) || compat_die "no free port on $host"
    for i in 1 2 3; do initial+="${initial:+,}m$i=http://$host:$((base + 2 * i + 1))"; done
    ETCD_EPS=
    for i in 1 2 3; do
        local cp=$((base + 2 * i)) pp=$((base + 2 * i + 1))
        ETCD_EPS+="${ETCD_EPS:+,}http://$host:$cp"
        etcd --name "m$i" --data-dir "$COMPAT_DIR/etcd${1:-3}-m$i" \
            --listen-client-urls "http://$host:$cp" --advertise-client-urls "http://$host:$cp" \
            --listen-peer-urls "http://$host:$pp" --initial-advertise-peer-urls "http://$host:$pp" \
            --initial-cluster "$initial" --initial-cluster-token "compat-$COMPAT_NAME-${1:-3}" \
            --initial-cluster-state new --logger zap --log-outputs stderr \
            --experimental-watch-progress-notify-interval 1s \
            >"$COMPAT_DIR/etcd${1:-3}-m$i.log" 2>&1 &
        COMPAT_PIDS+=($!)
    done
    # Healthy = a linearizable read through raft succeeded on every member.
    ETCDCTL_API=3 compat_wait 60 etcdctl --endpoints "$ETCD_EPS" --dial-timeout 2s \
        --command-timeout 3s endpoint health ||
        compat_die "etcd did not become healthy in 60 s"
    # The oracle endpoint is the leader, as the gateway's is (its header names the member that
    # answered; "IS LEADER" compares with it).
    local st
    st=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EPS" endpoint status -w json)
    ETCD_EP=$(printf '%s' "$st" | "${PY:-python3}" -c '
import json, sys
for e in json.load(sys.stdin):
    if e["Status"]["leader"] == e["Status"]["header"]["member_id"]:
        print(e["Endpoint"]); break')
    [ -n "$ETCD_EP" ] || compat_die "no etcd leader found"
    compat_log "etcd up: $ETCD_EP (cluster $ETCD_EPS)"
}

# compat_keel_plan KEELD [BLOCK-OFFSET]: the addresses of a 3-member keel cluster, member i on
# 127.0.(block + offset + i - 1).1 (KEEL_ENDPOINTS), nothing started yet.
compat_keel_plan() {
    local i
    COMPAT_KEELD=$1
    COMPAT_KEEL_OFF=${2:-0}
    COMPAT_KEEL_TAG=keel
    [ "$COMPAT_KEEL_OFF" -eq 0 ] || COMPAT_KEEL_TAG=keel$COMPAT_KEEL_OFF
    [ -x "$COMPAT_KEELD" ] || compat_die "no keeld at $COMPAT_KEELD"
    COMPAT_KEEL_PORT=$(compat_free_port "127.0.$((COMPAT_BLOCK + COMPAT_KEEL_OFF)).1" 35010) ||
        compat_die "no free port"
    COMPAT_KEEL_INITIAL=
    KEEL_ENDPOINTS=
    for i in 1 2 3; do
        local host=127.0.$((COMPAT_BLOCK + COMPAT_KEEL_OFF + i - 1)).1
        COMPAT_KEEL_INITIAL+="${COMPAT_KEEL_INITIAL:+,}m$i=$host:$((COMPAT_KEEL_PORT + 1))@z$i"
        KEEL_ENDPOINTS+="${KEEL_ENDPOINTS:+,}$host:$COMPAT_KEEL_PORT"
    done
}

# compat_keel_member I [EXTRA KEELD FLAGS...]: start member I of the planned cluster, its data in
# $COMPAT_DIR/TAG-mI (a later --data-dir among the flags wins), its log in $COMPAT_DIR/TAG-mI.log.
compat_keel_member() {
    local i=$1 host=127.0.$((COMPAT_BLOCK + COMPAT_KEEL_OFF + $1 - 1)).1
    shift
    "$COMPAT_KEELD" --name "m$i" --data-dir "$COMPAT_DIR/$COMPAT_KEEL_TAG-m$i" \
        --listen-client "$host:$COMPAT_KEEL_PORT" --listen-peer "$host:$((COMPAT_KEEL_PORT + 1))" \
        --initial-cluster "$COMPAT_KEEL_INITIAL" --watch-progress-ms 1000 "$@" \
        >"$COMPAT_DIR/$COMPAT_KEEL_TAG-m$i.log" 2>&1 &
    COMPAT_PIDS+=($!)
}

compat_start_keel() { # KEELD [BLOCK-OFFSET [EXTRA KEELD FLAGS...]]
    local i
    compat_keel_plan "$1" "${2:-0}"
    shift
    [ $# -gt 0 ] && shift
    for i in 1 2 3; do compat_keel_member "$i" "$@"; done
    compat_wait 60 grep -q "became leader" "$COMPAT_DIR/$COMPAT_KEEL_TAG-m1.log" \
        "$COMPAT_DIR/$COMPAT_KEEL_TAG-m2.log" "$COMPAT_DIR/$COMPAT_KEEL_TAG-m3.log" ||
        compat_die "keel elected no leader in 60 s"
    compat_log "keel up: $KEEL_ENDPOINTS"
}

# compat_each EPS ARGS...: keelctl ARGS on every member of EPS in turn ($CTL), the output of each
# on one line.
compat_each() {
    local ep
    for ep in ${1//,/ }; do "$CTL" --endpoints "$ep" "${@:2}" 2>&1 | tr '\n' ' '; echo; done
}

compat_start_gateway() {
    local gw=$1 host=127.0.$((COMPAT_BLOCK + 4)).1 port
    [ -x "$gw" ] || compat_die "no keel-gateway at $gw"
    port=$(compat_free_port "$host" 35020) || compat_die "no free port on $host"
    "$gw" --listen "$host:$port" --endpoints "$KEEL_ENDPOINTS" >"$COMPAT_DIR/gateway.log" 2>&1 &
    local pid=$!
    COMPAT_PIDS+=("$pid")
    GW_EP=http://$host:$port
    GW_PID=$pid
    # Up once it accepts connections; then once a read goes through it to keel (bounded: the
    # gateway may not serve Range yet, which the comparison then reports).
    local end=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        compat_alive "$pid" || compat_die "keel-gateway exited: $(tail -n 3 "$COMPAT_DIR/gateway.log")"
        [ $SECONDS -lt $end ] || compat_die "keel-gateway did not listen on $host:$port in 30 s"
        sleep 0.2
    done
    compat_wait 30 env ETCDCTL_API=3 etcdctl --endpoints "$GW_EP" --command-timeout 3s get compat-ready ||
        compat_log "warning: a get through the gateway still fails after 30 s"
    compat_log "keel-gateway up: $GW_EP (pid $pid)"
}

# Stop keel-gateway (TERM: GOAWAY, drain, exit 0) and check how it ended: 0 and no sanitizer
# report in its log, else 1. A no-op (0) when the target is a second etcd.
compat_stop_gateway() {
    [ -n "${COMPAT_AGAINST_ETCD:-}" ] && return 0
    local end=$((SECONDS + 20)) rc
    kill -TERM "$GW_PID" 2>/dev/null
    while compat_alive "$GW_PID" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    if compat_alive "$GW_PID"; then
        compat_log "keel-gateway did not exit within 20 s of SIGTERM"
        return 1
    fi
    wait "$GW_PID"
    rc=$?
    if grep -q "Sanitizer" "$COMPAT_DIR/gateway.log"; then
        compat_log "keel-gateway's log has a sanitizer report:"
        grep -A 30 "Sanitizer" "$COMPAT_DIR/gateway.log" | head -n 60 >&2
        return 1
    fi
    [ $rc -eq 0 ] || { compat_log "keel-gateway exited $rc on SIGTERM"; return 1; }
    return 0
}

# shellcheck disable=SC2034 # GW_* are for the scripts that source this file
compat_start_target() {
    if [ -n "${COMPAT_AGAINST_ETCD:-}" ]; then
        local ep=$ETCD_EP eps=$ETCD_EPS
        compat_start_etcd 4
        GW_EP=$ETCD_EP GW_EPS=$ETCD_EPS GW_PID=${COMPAT_PIDS[-1]}
        ETCD_EP=$ep ETCD_EPS=$eps
        compat_log "COMPAT_AGAINST_ETCD: comparing etcd with etcd ($GW_EP)"
    else
        compat_start_keel "$2"
        compat_start_gateway "$1"
        GW_EPS=$GW_EP
    fi
}
