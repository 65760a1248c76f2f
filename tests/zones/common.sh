# shellcheck shell=bash
# Shared by the zones tests (sourced). They change the firewall, so they need root, iptables with
# the NFQUEUE target and bpf match, and nfnetlink_queue; where any of that is missing they exit
# 77, which ctest reports as skipped (SKIP_RETURN_CODE). Zones 101..105 only: the cluster tests
# that run alongside use low zone numbers, and the rules never match those.

zt_skip() {
    echo "SKIPPED: $*"
    exit 77
}

zt_fail() {
    echo "FAIL: $*" >&2
    exit 1
}

zt_note() { echo "-- $*"; }

# Exits 77 unless this machine can run NFQUEUE rules at all.
zt_require() {
    [[ $(id -u) -eq 0 ]] || zt_skip "needs root"
    local t
    for t in iptables iptables-restore awk setsid flock; do
        command -v "$t" >/dev/null 2>&1 || zt_skip "$t not installed"
    done
    [[ -e /proc/net/netfilter/nfnetlink_queue ]] || zt_skip "kernel has no nfnetlink_queue"
    # Probe the exact features with a throwaway chain that nothing jumps to.
    local probe=KEEL_ZT_PROBE_$$ had_table=1
    nft list table ip filter >/dev/null 2>&1 || had_table=0
    local ok=1
    if ! iptables -w 5 -N "$probe" 2>/dev/null; then
        ok=0
    elif ! iptables -w 5 -A "$probe" -m bpf --bytecode "1,6 0 0 0" -j NFQUEUE --queue-num 4299 \
        --queue-bypass 2>/dev/null; then
        ok=0
    fi
    iptables -w 5 -F "$probe" 2>/dev/null || true
    iptables -w 5 -X "$probe" 2>/dev/null || true
    zt_drop_empty_filter_table "$had_table"
    ((ok)) || zt_skip "iptables cannot add an NFQUEUE rule with a bpf match here"
    # Root inside a container may lack SCHED_FIFO; the probe then runs as a normal process.
    ZT_RT=""
    if command -v chrt >/dev/null 2>&1 && chrt -f 1 true 2>/dev/null; then
        ZT_RT=1
    else
        zt_note "SCHED_FIFO unavailable: the probe runs unprioritised (load on this machine adds to its RTT)"
    fi
}

# iptables-nft creates `table ip filter` on first use; remove it again if we caused it and it is
# empty, so a test leaves the ruleset exactly as it found it.
zt_drop_empty_filter_table() {
    local had=$1
    ((had)) && return 0
    command -v nft >/dev/null 2>&1 || return 0
    [[ $(readlink -f "$(command -v iptables)") == *legacy* ]] && return 0
    local out
    out=$(iptables -w 5 -S 2>/dev/null) || return 0
    if [[ $out == $'-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT' ]]; then
        nft delete table ip filter 2>/dev/null || true
    fi
}

# Runs keel-zping and prints its median RTT in microseconds; returns zping's exit code. The probe
# runs SCHED_FIFO (these tests are root anyway): on a busy machine a normal process would measure
# its own wait for a CPU, not the simulated network.
zt_median() {
    local out rc=0
    out=$("$ZPING" ${ZT_RT:+--realtime} "$@") || rc=$?
    ((rc == 0)) || return "$rc"
    echo "$out" >&2
    sed -n 's/.*median_us=\([0-9.]*\).*/\1/p' <<<"$out"
}

# The median RTT for a delay check, measured the way a person would on a shared machine: a
# warm-up run that is thrown away, then the median of three runs' medians (one run disturbed by
# another process cannot move it).
zt_delay_median() {
    local -a ms=()
    local m i
    zt_median "$@" >/dev/null || return $?
    for i in 1 2 3; do
        m=$(zt_median "$@") || return $?
        ms+=("$m")
    done
    printf '%s\n' "${ms[@]}" | sort -g | sed -n 2p
}

# zt_within VALUE TARGET FRACTION: |VALUE - TARGET| <= FRACTION * TARGET
zt_within() {
    awk -v v="$1" -v t="$2" -v f="$3" 'BEGIN { d = v - t; if (d < 0) d = -d; exit !(d <= f * t) }'
}

# zt_le A B: A <= B
zt_le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
