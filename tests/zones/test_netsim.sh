#!/usr/bin/env bash
# keel-netsim on its own: a private chain queues 127.0.104.0/24 <-> 127.0.105.0/24 to a private
# queue, and a TCP ping-pong between the two blocks must take 2 x delay (±15%) per round trip.
# Usage: test_netsim.sh KEEL_NETSIM KEEL_ZPING
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

NETSIM=${1:?keel-netsim path}
ZPING=${2:?keel-zping path}
readonly CH=KEEL_ZT_NETSIM QUEUE=4290 A=127.0.104.1 B=127.0.105.1
LOG=$(mktemp /tmp/keel-zt-netsim.XXXXXX)
PID=""

zt_require
had_table=1
nft list table ip filter >/dev/null 2>&1 || had_table=0

cleanup() {
    local rc=$?
    trap '' INT TERM
    if [[ -n $PID ]]; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    local i
    for i in 1 2 3 4; do
        iptables -w 5 -D OUTPUT -j "$CH" -s 127.0.104.0/24 -d 127.0.105.0/24 2>/dev/null || true
        iptables -w 5 -D OUTPUT -j "$CH" -s 127.0.105.0/24 -d 127.0.104.0/24 2>/dev/null || true
    done
    iptables -w 5 -F "$CH" 2>/dev/null || true
    iptables -w 5 -X "$CH" 2>/dev/null || true
    zt_drop_empty_filter_table "$had_table"
    iptables -w 5 -S "$CH" >/dev/null 2>&1 && echo "FAIL: chain $CH left behind" >&2 && rc=1
    rm -f "$LOG"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

iptables -w 5 -N "$CH"
iptables -w 5 -A "$CH" -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
iptables -w 5 -I OUTPUT 1 -j "$CH" -s 127.0.104.0/24 -d 127.0.105.0/24
iptables -w 5 -I OUTPUT 1 -j "$CH" -s 127.0.105.0/24 -d 127.0.104.0/24

# Nobody reads the queue yet: --queue-bypass must let everything through untouched.
base=$(zt_median --from $A --to $B --count 200 --timeout-ms 1000) ||
    zt_fail "no traffic through an unread queue with --queue-bypass"
zt_note "baseline through the unread queue: median ${base}us"
zt_le "$base" 500 || zt_fail "baseline RTT ${base}us: bypass does not pass packets at once"

start() { # args for keel-netsim
    : >"$LOG"
    "$NETSIM" --queue "$QUEUE" "$@" >"$LOG" 2>&1 &
    PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q "queue $QUEUE ready" "$LOG" && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$LOG" >&2
    zt_fail "keel-netsim did not come up"
}

stop() { # signal
    kill "-$1" "$PID"
    local i rc=0
    for ((i = 0; i < 60; i++)); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$PID" 2>/dev/null && zt_fail "keel-netsim ignored SIG$1"
    wait "$PID" || rc=$?
    PID=""
    cat "$LOG"
    ((rc == 0)) || zt_fail "keel-netsim exited $rc on SIG$1"
    grep -q 'keel-netsim: queue=.* received=[1-9]' "$LOG" || zt_fail "no stats line on exit"
    grep -q ' verdict_errors=0' "$LOG" || zt_fail "verdict errors"
}

# Accuracy: the RTT a TCP ping-pong sees must be 2 x delay (each packet is delayed once per
# direction). Reported: keel-netsim's own overhead (median RTT added at 0 us configured) and the
# error of the one-way delay at 1 ms and 2 ms, both net of the undelayed loopback RTT.
declare -A med
for delay in 0 1000 2000; do
    start --delay-us "$delay" --jitter-us 0 --realtime
    med[$delay]=$(zt_delay_median --from $A --to $B --count 200 --timeout-ms 2000) ||
        zt_fail "ping-pong failed with delay ${delay}us"
    if ((delay == 1000)); then stop INT; else stop TERM; fi
done
zt_note "$(awk -v b="$base" -v m0="${med[0]}" -v m1="${med[1000]}" -v m2="${med[2000]}" 'BEGIN {
    printf "overhead: median RTT added at 0us %.1fus; one-way error at 1ms %+.1fus (%+.1f%%), at 2ms %+.1fus (%+.1f%%)",
        m0 - b, (m1 - b) / 2 - 1000, ((m1 - b) / 2 - 1000) / 10, (m2 - b) / 2 - 2000, ((m2 - b) / 2 - 2000) / 20 }')"
for delay in 1000 2000; do
    want=$((2 * delay))
    zt_note "delay ${delay}us: median RTT ${med[$delay]}us (want ${want}us ±15%)"
    zt_within "${med[$delay]}" "$want" 0.15 || zt_fail "median RTT ${med[$delay]}us is not ${want}us ±15%"
done

# 100% loss: nothing gets through, and the connection attempt gives up within its timeout.
start --delay-us 1000 --loss 100
rc=0
"$ZPING" --from $A --to $B --count 5 --timeout-ms 300 >/dev/null 2>&1 || rc=$?
((rc == 3)) || zt_fail "connect through --loss 100 did not time out (zping exit $rc)"
kill -TERM "$PID"
wait "$PID" || zt_fail "keel-netsim exit status after --loss 100"
PID=""
grep -q ' lost=[1-9]' "$LOG" || zt_fail "loss not counted: $(cat "$LOG")"

# Gone again: traffic flows undelayed (bypass), nothing left stuck in the queue.
after=$(zt_median --from $A --to $B --count 50 --timeout-ms 1000) ||
    zt_fail "traffic blocked after keel-netsim exited"
zt_le "$after" 500 || zt_fail "RTT ${after}us after keel-netsim exited"
echo "PASS"
