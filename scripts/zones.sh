#!/usr/bin/env bash
# Simulated availability zones on loopback: slower, lossy links between zone address blocks and
# zone partitions, for keel (and etcd) clusters on one machine. See usage() and DESIGN.md
# ("Zones and simulated availability zones").
set -euo pipefail

readonly CHAIN=KEEL_ZONES
readonly COMMENT=keel-zones
readonly STATE_DIR=/run/keel-zones
readonly STATE=$STATE_DIR/state
readonly DEFAULT_QUEUE=4200
# xt_bpf keeps at most 64 instructions; each zone range costs 4 (see bpf_cross_zone).
readonly MAX_RUNS=12

usage() {
    cat <<'EOF'
usage: zones.sh on [--delay 1ms] [--jitter 0.1ms] [--loss 0] [--zones LIST] [--ports P1,P2,...]
                   [--queue N] [--netsim PATH] [--no-realtime]
       zones.sh partition [--zones LIST] ZONE...
       zones.sh heal [ZONE...]
       zones.sh off
       zones.sh status
       zones.sh run [on options] -- COMMAND [ARGS...]

Zone N (1..254) is the loopback block 127.0.N.0/24: keel members of zone N listen on 127.0.N.1 and
bind every connection they open to their zone address, so a packet's zones are the /24 blocks of
its source and destination. A packet is cross-zone when both are zone blocks of different zones.

  on         delay (and optionally jitter and lose) every cross-zone packet, once per direction,
             so a round trip between zones takes 2 x delay more. Traffic inside a zone and
             anything outside 127.0.N.0/24 blocks is not matched at all. Running `on` again
             reconfigures without a gap.
             --delay D     one-way delay added to cross-zone packets (units us, ms, s; bare = ms;
                           default 1ms). With --delay 0 and no jitter/loss only partitions apply.
             --jitter J    uniform +-J on each packet's delay; packets of one flow keep their order.
             --loss P      percent of cross-zone packets dropped (e.g. 0.5 or 0.5%).
             --zones LIST  zones that take part, e.g. 101,102,103 or 1-9 (default 1-254). Blocks
                           outside the list are ordinary addresses: never delayed nor partitioned.
                           At most 12 separate ranges.
             --ports LIST  for etcd, which does not bind its source address (its packets come from
                           127.0.0.1): additionally treat every TCP packet from or to one of these
                           ports on 127.0.0.0/16 as cross-zone. With one etcd member per zone, pass
                           the members' peer ports and all peer traffic is delayed. Partitions do
                           not know these ports: a partitioned zone's etcd member still reaches the
                           others over connections it opened itself from 127.0.0.1.
             --queue N     netfilter queue number (default 4200; reconfiguring alternates N, N+1).
             --netsim PATH keel-netsim binary (default: $KEEL_NETSIM, PATH, then build*/ of this
                           repository).
             --no-realtime do not run keel-netsim with SCHED_FIFO.
  partition  drop all traffic between each ZONE's block and the other zone blocks, both
             directions, until `heal`. Works with or without `on`.
  heal       lift the partitions of the given zones (default: all).
  off        remove every rule this script added and stop keel-netsim. Idempotent.
  status     print what is active; exit 0 when something is active, 3 when off.
  run        `on`, then COMMAND, then `off` however COMMAND ends (also on Ctrl-C).

Needs root, iptables (Debian package iptables; the nf_tables backend puts the rules in nftables'
`table ip filter`, chain KEEL_ZONES) with the NFQUEUE target and the bpf match, and nfnetlink_queue.
Rules match packets in the OUTPUT hook: loopback packets pass it exactly once per direction. The
queue rule has --queue-bypass and keel-netsim opens its queue fail-open, so packets pass undelayed
if keel-netsim is gone or overloaded; loopback never blackholes. The kernel's tc netem is not used
(our kernels lack it); the NFQUEUE path works on any kernel with the pieces above.
EOF
}

die() {
    echo "zones.sh: $*" >&2
    exit 1
}

# ---- parsing ---------------------------------------------------------------------------------

# Prints microseconds for "1ms", "0.1ms", "250us", "2s" or a bare number of milliseconds.
parse_us() {
    local v=$1 what=$2
    [[ $v =~ ^([0-9]+(\.[0-9]+)?)(us|ms|s)?$ ]] || die "bad $what '$v' (use e.g. 1ms, 100us)"
    local num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]:-ms}
    awk -v n="$num" -v u="$unit" 'BEGIN {
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : 1000000
        r = n * m
        if (r > 10000000) exit 1
        printf "%d\n", r + 0.5
    }' || die "$what '$v' is over 10s"
}

parse_loss() {
    local v=${1%\%}
    [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "bad loss '$1' (percent, e.g. 0.5)"
    awk -v n="$v" 'BEGIN { exit !(n <= 100) }' || die "loss '$1' is over 100%"
    echo "$v"
}

# Normalises a zone list ("101,103,102" / "1-9,20") to sorted ranges "101-103" / "1-9,20-20".
# shellcheck disable=SC2034 # `on` is read through the nameref in ranges_of
parse_zones() {
    local spec=$1 part lo hi z
    local -a on=()
    [[ -n $spec ]] || die "empty zone list"
    IFS=, read -r -a parts <<<"$spec"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=$((10#${BASH_REMATCH[1]})) hi=$((10#${BASH_REMATCH[2]}))
        elif [[ $part =~ ^[0-9]+$ ]]; then
            lo=$((10#$part)) hi=$lo
        else
            die "bad zone list '$spec' (e.g. 101,102,103 or 1-9)"
        fi
        ((lo >= 1 && hi <= 254 && lo <= hi)) || die "zones are 1..254, got '$part'"
        for ((z = lo; z <= hi; z++)); do on[z]=1; done
    done
    ranges_of on
}

# Prints the runs of set indices of the named sparse array as "lo-hi,lo-hi".
ranges_of() {
    local -n set_=$1
    local out="" z start=-1
    for ((z = 1; z <= 255; z++)); do
        if [[ -n ${set_[z]:-} ]]; then
            ((start < 0)) && start=$z
        elif ((start >= 0)); then
            out+="${out:+,}$start-$((z - 1))"
            start=-1
        fi
    done
    echo "$out"
}

zone_in() { # zone ranges
    local z=$1 r
    local -a rs
    IFS=, read -r -a rs <<<"$2"
    for r in "${rs[@]}"; do
        ((z >= ${r%-*} && z <= ${r#*-})) && return 0
    done
    return 1
}

parse_ports() {
    local spec=$1 p
    [[ $spec =~ ^[0-9]+(,[0-9]+)*$ ]] || die "bad port list '$spec' (e.g. 2380,2381,2382)"
    IFS=, read -r -a ps <<<"$spec"
    for p in "${ps[@]}"; do
        ((10#$p >= 1 && 10#$p <= 65535)) || die "bad port $p"
    done
    echo "$spec"
}

# ---- state -----------------------------------------------------------------------------------

S_ZONES="" S_PORTS="" S_DELAY_US=0 S_JITTER_US=0 S_LOSS=0 S_QUEUE_BASE=$DEFAULT_QUEUE S_QUEUE=""
S_PARTS="" S_IPT="" S_NETSIM="" S_REALTIME=1 S_PID="" S_MADE_TABLE=0 S_AUTOCORK=""
# keel-netsim processes an `on` in progress is replacing / has started (see do_off).
OLD_PID="" OLD_EXE="" NEW_PID="" NEW_EXE=""

load_state() {
    [[ -f $STATE ]] || return 1
    local k v
    while IFS='=' read -r k v; do
        # Only our own keys with plain values: the file is parsed, never sourced.
        [[ $k =~ ^S_[A-Z_]+$ && $v =~ ^[A-Za-z0-9_./,:+-]*$ ]] || continue
        printf -v "$k" '%s' "$v"
    done <"$STATE"
    return 0
}

save_state() {
    mkdir -p "$STATE_DIR"
    local tmp=$STATE.tmp k
    : >"$tmp"
    for k in S_ZONES S_PORTS S_DELAY_US S_JITTER_US S_LOSS S_QUEUE_BASE S_QUEUE S_PARTS S_IPT \
        S_NETSIM S_REALTIME S_PID S_MADE_TABLE S_AUTOCORK; do
        printf '%s=%s\n' "$k" "${!k}" >>"$tmp"
    done
    mv -f "$tmp" "$STATE"
}

lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    flock -w 20 9 || die "another zones.sh holds $STATE_DIR/lock"
}

unlock() {
    flock -u 9 2>/dev/null || true
    exec 9>&-
}

# ---- requirements ----------------------------------------------------------------------------

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it changes the firewall); try: sudo $0 ${ARGS[*]}"
}

require_tools() {
    local t
    for t in iptables iptables-restore flock awk setsid; do
        command -v "$t" >/dev/null 2>&1 ||
            die "$t not found (apt-get install iptables util-linux; or run scripts/deps.sh)"
    done
}

require_queue() {
    if [[ ! -e /proc/net/netfilter/nfnetlink_queue ]]; then
        modprobe nfnetlink_queue 2>/dev/null || true
        [[ -e /proc/net/netfilter/nfnetlink_queue ]] ||
            die "the kernel has no netfilter queue support (nfnetlink_queue)"
    fi
}

find_netsim() {
    local want=$1 c best="" here
    if [[ -n $want ]]; then
        [[ -x $want ]] || die "--netsim $want is not an executable"
        readlink -f "$want"
        return
    fi
    if [[ -n ${KEEL_NETSIM:-} ]]; then
        [[ -x $KEEL_NETSIM ]] || die "KEEL_NETSIM=$KEEL_NETSIM is not an executable"
        readlink -f "$KEEL_NETSIM"
        return
    fi
    if c=$(command -v keel-netsim 2>/dev/null); then
        readlink -f "$c"
        return
    fi
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    for c in "$here"/build*/bench/keel-netsim "$here"/build/*/bench/keel-netsim; do
        [[ -x $c ]] || continue
        if [[ -z $best || $c -nt $best ]]; then best=$c; fi
    done
    [[ -n $best ]] || die "keel-netsim not found: build it (cmake --build BUILD --target keel-netsim;" \
        "needs libnetfilter-queue-dev) or pass --netsim PATH"
    readlink -f "$best"
}

# ---- iptables --------------------------------------------------------------------------------

ipt() { "$S_IPT" -w 5 "$@"; }

chain_exists() { "$1" -w 5 -S "$CHAIN" >/dev/null 2>&1; }

# True when the only thing in iptables-nft's filter table is its three default policies.
filter_table_empty() {
    local out
    out=$(iptables-nft -w 5 -S 2>/dev/null) || return 1
    [[ $out == $'-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT' ]]
}

# Classic BPF on the IPv4 header: both addresses in 127.0.0.0/16, both third octets in the zone
# ranges, and different. One rule instead of a rule per zone pair keeps the cost for unrelated
# loopback traffic at a few instructions.
bpf_cross_zone() {
    local ranges=$1 lo hi i
    local -a rs ins member=()
    IFS=, read -r -a rs <<<"$ranges"
    local m=${#rs[@]}
    ((m <= MAX_RUNS)) || die "--zones has $m separate ranges; at most $MAX_RUNS fit the bpf match"
    for ((i = 0; i < m; i++)); do
        lo=${rs[i]%-*} hi=${rs[i]#*-}
        # A < lo: skip to the next range. A <= hi: jump past the final "ret #0" to the member path.
        member+=("53 0 1 $lo" "37 0 $((2 * (m - 1 - i) + 1)) $hi")
    done
    ins=("40 0 0 12" "21 1 0 32512" "6 0 0 0" # saddr in 127.0/16
        "40 0 0 16" "21 1 0 32512" "6 0 0 0"    # daddr in 127.0/16
        "48 0 0 14" "${member[@]}" "6 0 0 0"    # source zone
        "7 0 0 0"                               # X = source zone
        "48 0 0 18" "${member[@]}" "6 0 0 0"    # destination zone
        "29 0 1 0" "6 0 0 0" "6 0 0 65535")     # different zones: match
    local out=${#ins[@]} x
    for x in "${ins[@]}"; do out+=",$x"; done
    echo "$out"
}

# Writes the iptables-restore input for the current state on stdout.
render_rules() {
    local z r lo hi others q chunk x i
    local -a pz rs os plist
    echo "*filter"
    echo ":$CHAIN - [0:0]"
    if [[ -n $S_PARTS ]]; then
        IFS=, read -r -a pz <<<"$S_PARTS"
        for z in "${pz[@]}"; do
            # The other zones' ranges: this zone's range minus itself.
            local -a set=()
            IFS=, read -r -a rs <<<"$S_ZONES"
            for r in "${rs[@]}"; do
                for ((x = ${r%-*}; x <= ${r#*-}; x++)); do set[x]=1; done
            done
            unset "set[$z]"
            others=$(ranges_of set)
            [[ -n $others ]] || continue
            IFS=, read -r -a os <<<"$others"
            for r in "${os[@]}"; do
                lo=${r%-*} hi=${r#*-}
                echo "-A $CHAIN -s 127.0.$z.0/24 -m iprange --dst-range 127.0.$lo.0-127.0.$hi.255" \
                    "-m comment --comment $COMMENT:partition:$z -j DROP"
                echo "-A $CHAIN -d 127.0.$z.0/24 -m iprange --src-range 127.0.$lo.0-127.0.$hi.255" \
                    "-m comment --comment $COMMENT:partition:$z -j DROP"
            done
        done
    fi
    if [[ -n $S_QUEUE ]]; then
        q="-j NFQUEUE --queue-num $S_QUEUE --queue-bypass"
        echo "-A $CHAIN -m bpf --bytecode \"$(bpf_cross_zone "$S_ZONES")\"" \
            "-m comment --comment $COMMENT:cross-zone $q"
        if [[ -n $S_PORTS ]]; then
            IFS=, read -r -a plist <<<"$S_PORTS"
            # multiport takes at most 15 ports per rule.
            for ((i = 0; i < ${#plist[@]}; i += 15)); do
                chunk=$(
                    IFS=,
                    echo "${plist[*]:i:15}"
                )
                echo "-A $CHAIN -p tcp -m multiport --ports $chunk" \
                    "-m comment --comment $COMMENT:ports $q"
            done
        fi
    fi
    echo "COMMIT"
}

# Replaces the chain's rules in one transaction, then makes sure OUTPUT jumps to it.
apply_rules() {
    local rules err
    rules=$(render_rules)
    if ! err=$(printf '%s\n' "$rules" | "${S_IPT}-restore" -w 5 --noflush 2>&1); then
        echo "$err" >&2
        die "iptables rejected the rules; does the kernel have the NFQUEUE target, the bpf," \
            "iprange, multiport and comment matches?"
    fi
    if ! ipt -C OUTPUT -s 127.0.0.0/16 -d 127.0.0.0/16 -m comment --comment "$COMMENT" \
        -j "$CHAIN" 2>/dev/null; then
        ipt -I OUTPUT 1 -s 127.0.0.0/16 -d 127.0.0.0/16 -m comment --comment "$COMMENT" -j "$CHAIN"
    fi
}

remove_rules_with() {
    local cmd=$1 i
    command -v "$cmd" >/dev/null 2>&1 || return 0
    for ((i = 0; i < 16; i++)); do
        "$cmd" -w 5 -D OUTPUT -s 127.0.0.0/16 -d 127.0.0.0/16 -m comment --comment "$COMMENT" \
            -j "$CHAIN" 2>/dev/null || break
    done
    if chain_exists "$cmd"; then
        "$cmd" -w 5 -F "$CHAIN" 2>/dev/null || true
        "$cmd" -w 5 -X "$CHAIN" 2>/dev/null || echo "zones.sh: could not delete $cmd chain $CHAIN" >&2
    fi
}

# ---- keel-netsim -----------------------------------------------------------------------------

# The pid file may be stale and the pid reused: only a live process running the keel-netsim
# binary that was started (default: the one in the state) counts. The binary may have been
# rebuilt since, which /proc shows as " (deleted)".
netsim_alive() {
    local pid=$1 want=${2:-$S_NETSIM} stat exe
    [[ $pid =~ ^[0-9]+$ && -n $want ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]] || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [[ ${exe% (deleted)} == "$want" ]]
}

# Starts keel-netsim on queue $1 and prints its pid once it has bound the queue.
start_netsim() {
    local q=$1 log=$STATE_DIR/netsim.$1.log pid i
    local -a args=(--queue "$q" --delay-us "$S_DELAY_US" --jitter-us "$S_JITTER_US" --loss "$S_LOSS")
    ((S_REALTIME)) && args+=(--realtime)
    mkdir -p "$STATE_DIR"
    : >"$log"
    # setsid: no controlling terminal, so closing the terminal that ran `on` does not stop it.
    # 9>&-: it must not inherit the lock, or a crashed zones.sh would leave the lock held.
    setsid "$S_NETSIM" "${args[@]}" </dev/null >>"$log" 2>&1 9>&- &
    pid=$!
    for ((i = 0; i < 100; i++)); do
        if grep -q "queue $q ready" "$log" 2>/dev/null; then
            echo "$pid"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -TERM "$pid" 2>/dev/null || true
    cat "$log" >&2
    echo "zones.sh: keel-netsim did not start on queue $q (queue in use? pick one with --queue N)" >&2
    return 1
}

stop_netsim() { # pid [binary]
    local pid=$1 want=${2:-$S_NETSIM} i
    netsim_alive "$pid" "$want" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 60; i++)); do
        netsim_alive "$pid" "$want" || return 0
        sleep 0.05
    done
    echo "zones.sh: keel-netsim $pid ignored SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

# ---- commands --------------------------------------------------------------------------------

# Tears everything down; safe to call in any state, including half-applied ones.
do_off() {
    trap '' INT TERM
    load_state || true
    remove_rules_with iptables-nft
    # Touching legacy tables instantiates them (and iptables-nft then warns about them forever),
    # so only look there when a legacy filter table exists already.
    if grep -qx filter /proc/net/ip_tables_names 2>/dev/null; then
        remove_rules_with iptables-legacy
    fi
    [[ -n $S_PID ]] && stop_netsim "$S_PID"
    # A failed `on` may have started one the state does not name yet, or already replaced the
    # state's one with it.
    if [[ -n ${NEW_PID:-} ]]; then stop_netsim "$NEW_PID" "$NEW_EXE"; fi
    if [[ -n ${OLD_PID:-} ]]; then stop_netsim "$OLD_PID" "$OLD_EXE"; fi
    if ((S_MADE_TABLE)) && [[ $S_IPT == iptables-nft ]] && filter_table_empty; then
        nft delete table ip filter 2>/dev/null || true
    fi
    restore_autocork
    rm -f "$STATE" "$STATE.tmp" "$STATE_DIR"/netsim.*.log
    trap - INT TERM
}

# TCP autocorking holds a small write back while an earlier packet of the socket still sits below
# TCP, and keel-netsim keeps every delayed packet below TCP for the whole delay. So with the
# simulation on, a second message sent right after a first one left a socket one full delay late
# (measured: two raft appends 77 us apart arrived 1 ms apart; half of all puts over two client
# connections took 3.4 ms instead of 2.4 ms at 1 ms zones). On a real link the packet leaves the
# host in microseconds and autocorking costs nothing, so it is off while delays are simulated and
# restored by `off` to what it was.
readonly AUTOCORK=/proc/sys/net/ipv4/tcp_autocorking

disable_autocork() {
    [[ -w $AUTOCORK && -z $S_AUTOCORK ]] || return 0
    S_AUTOCORK=$(cat "$AUTOCORK")
    save_state
    echo 0 >"$AUTOCORK"
}

restore_autocork() {
    if [[ -n $S_AUTOCORK && -w $AUTOCORK ]]; then
        echo "$S_AUTOCORK" >"$AUTOCORK" || true
    fi
    S_AUTOCORK=""
}

pick_ipt() {
    local real
    real=$(readlink -f "$(command -v iptables)")
    case $real in
    *legacy*) echo iptables-legacy ;;
    *) echo iptables-nft ;;
    esac
}

# Any failure or interrupt while changing things leaves nothing behind rather than half a setup.
fail_safe() {
    local rc=$?
    trap - EXIT
    if ((rc != 0)); then
        echo "zones.sh: failed or interrupted; removing everything" >&2
        do_off
    fi
    exit "$rc"
}

# Remembers whether iptables-nft's filter table is ours to delete at `off`: only when this setup
# is the first thing to create it.
note_table() {
    if [[ ! -f $STATE && $S_IPT == iptables-nft ]] && command -v nft >/dev/null 2>&1; then
        nft list table ip filter >/dev/null 2>&1 || S_MADE_TABLE=1
    fi
}

# Makes the kernel state match S_*; starts the new keel-netsim before retiring the old one so a
# reconfiguration never lets cross-zone packets through undelayed.
commit() {
    local old_pid=$OLD_PID old_exe=$OLD_EXE
    NEW_PID="" NEW_EXE=$S_NETSIM
    if ((S_DELAY_US > 0 || S_JITTER_US > 0)) || [[ $S_LOSS != 0 ]]; then
        local q=$S_QUEUE_BASE
        [[ -n $old_pid && $S_QUEUE == "$q" ]] && q=$((S_QUEUE_BASE + 1))
        NEW_PID=$(start_netsim "$q")
        S_QUEUE=$q S_PID=$NEW_PID
    else
        S_QUEUE="" S_PID=""
    fi
    note_table
    save_state
    if [[ -n $S_PID ]]; then disable_autocork; else restore_autocork; fi
    save_state
    apply_rules
    [[ -n $old_pid && $old_pid != "$S_PID" ]] && stop_netsim "$old_pid" "$old_exe"
    NEW_PID="" OLD_PID="" OLD_EXE=""
}

cmd_on() {
    local delay=1ms jitter=0 loss=0 zones="" ports="" queue="" netsim="" realtime=1
    while (($#)); do
        case $1 in
        --delay) delay=${2:?--delay needs a value}; shift 2 ;;
        --jitter) jitter=${2:?--jitter needs a value}; shift 2 ;;
        --loss) loss=${2:?--loss needs a value}; shift 2 ;;
        --zones) zones=${2:?--zones needs a value}; shift 2 ;;
        --ports) ports=${2:?--ports needs a value}; shift 2 ;;
        --queue) queue=${2:?--queue needs a value}; shift 2 ;;
        --netsim) netsim=${2:?--netsim needs a value}; shift 2 ;;
        --no-realtime) realtime=0; shift ;;
        *) die "on: unknown option '$1' (see zones.sh help)" ;;
        esac
    done
    local d j l z p
    d=$(parse_us "$delay" delay)
    j=$(parse_us "$jitter" jitter)
    l=$(parse_loss "$loss")
    z=$(parse_zones "${zones:-1-254}")
    p=""
    [[ -n $ports ]] && p=$(parse_ports "$ports")
    if [[ -n $queue ]]; then
        if ! [[ $queue =~ ^[0-9]+$ ]] || ((10#$queue > 65534)); then
            die "bad queue number '$queue'"
        fi
    fi
    require_root
    require_tools
    require_queue
    local ns=""
    if ((d > 0 || j > 0)) || [[ $l != 0 ]]; then ns=$(find_netsim "$netsim"); fi
    bpf_cross_zone "$z" >/dev/null

    lock
    trap fail_safe EXIT
    trap 'exit 130' INT TERM
    OLD_PID="" OLD_EXE=""
    if load_state; then
        netsim_alive "$S_PID" && OLD_PID=$S_PID OLD_EXE=$S_NETSIM
    else
        S_IPT=$(pick_ipt)
    fi
    S_ZONES=$z S_PORTS=$p S_DELAY_US=$d S_JITTER_US=$j S_LOSS=$l S_NETSIM=$ns S_REALTIME=$realtime
    [[ -n $queue ]] && S_QUEUE_BASE=$queue
    # Partitions of zones that left the list would match nothing; drop them.
    local kept="" x
    if [[ -n $S_PARTS ]]; then
        IFS=, read -r -a pz <<<"$S_PARTS"
        for x in "${pz[@]}"; do zone_in "$x" "$S_ZONES" && kept+="${kept:+,}$x"; done
    fi
    S_PARTS=$kept
    commit
    trap - EXIT INT TERM
    unlock
    describe || true
}

# shellcheck disable=SC2034 # `set` is read through the nameref in ranges_of
cmd_partition() {
    local zones="" z
    local -a want=()
    while (($#)); do
        case $1 in
        --zones) zones=${2:?--zones needs a value}; shift 2 ;;
        -*) die "partition: unknown option '$1'" ;;
        *)
            if ! [[ $1 =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > 254)); then
                die "bad zone '$1' (1..254)"
            fi
            want+=($((10#$1)))
            shift
            ;;
        esac
    done
    ((${#want[@]})) || die "partition: which zone? (zones.sh partition ZONE)"
    [[ -n $zones ]] && zones=$(parse_zones "$zones")
    require_root
    require_tools
    lock
    trap fail_safe EXIT
    trap 'exit 130' INT TERM
    if load_state; then
        [[ -z $zones || $zones == "$S_ZONES" ]] ||
            die "partition --zones $zones differs from the active $S_ZONES; use on --zones"
    else
        S_IPT=$(pick_ipt)
        S_ZONES=${zones:-1-254} S_DELAY_US=0 S_JITTER_US=0 S_LOSS=0
    fi
    local -a set=()
    if [[ -n $S_PARTS ]]; then
        IFS=, read -r -a pz <<<"$S_PARTS"
        for z in "${pz[@]}"; do set[z]=1; done
    fi
    for z in "${want[@]}"; do
        zone_in "$z" "$S_ZONES" || die "zone $z is not among the active zones $S_ZONES"
        set[z]=1
    done
    S_PARTS=$(ranges_of set | tr ',' '\n' | awk -F- '{for (i = $1; i <= $2; i++) print i}' |
        paste -sd,)
    # Rules only: keel-netsim keeps running as it is.
    note_table
    save_state
    apply_rules
    trap - EXIT INT TERM
    unlock
    describe || true
}

cmd_heal() {
    local z
    local -a want=()
    for z in "$@"; do
        [[ $z =~ ^[0-9]+$ ]] || die "bad zone '$z'"
        want+=($((10#$z)))
    done
    require_root
    require_tools
    lock
    if ! load_state; then
        unlock
        echo "zones.sh: nothing to heal (off)"
        return 0
    fi
    trap fail_safe EXIT
    trap 'exit 130' INT TERM
    if ((${#want[@]} == 0)); then
        S_PARTS=""
    else
        local kept="" x
        IFS=, read -r -a pz <<<"$S_PARTS"
        for x in "${pz[@]}"; do
            [[ " ${want[*]} " == *" $x "* ]] || kept+="${kept:+,}$x"
        done
        S_PARTS=$kept
    fi
    if [[ -z $S_PARTS && -z $S_QUEUE ]]; then
        # Nothing left to simulate: same as off, so no empty chain lingers.
        trap - EXIT INT TERM
        do_off
    else
        save_state
        apply_rules
        trap - EXIT INT TERM
    fi
    unlock
    describe || true
}

cmd_off() {
    require_root
    require_tools
    lock
    do_off
    unlock
    echo "zones: off"
}

describe() {
    if ! load_state; then
        echo "zones: off"
        return 3
    fi
    local alive=dead
    netsim_alive "$S_PID" && alive=running
    echo "zones: on ($S_IPT, chain filter/$CHAIN)"
    echo "  zones: ${S_ZONES//-/..}${S_PORTS:+  etcd ports: $S_PORTS}"
    if [[ -n $S_QUEUE ]]; then
        echo "  cross-zone: delay ${S_DELAY_US}us jitter ${S_JITTER_US}us loss ${S_LOSS}%" \
            "via keel-netsim pid $S_PID ($alive) on queue $S_QUEUE"
    else
        echo "  cross-zone: no delay"
    fi
    echo "  partitioned: ${S_PARTS:-none}"
    return 0
}

cmd_status() {
    require_root
    require_tools
    local rc=0
    describe || rc=$?
    if ((rc == 0)); then
        local line
        if [[ -n $S_QUEUE ]] && line=$(awk -v q="$S_QUEUE" '$1 == q' \
            /proc/net/netfilter/nfnetlink_queue 2>/dev/null) && [[ -n $line ]]; then
            # Fields: queue, portid, waiting, copy mode, range, queue_dropped, user_dropped, ...
            read -r _ _ waiting _ _ qdrop udrop _ <<<"$line"
            echo "  kernel queue: $waiting waiting, $qdrop dropped (overflow, passed), $udrop lost" \
                "to netlink (passed)"
        fi
        if netsim_alive "$S_PID"; then
            kill -USR1 "$S_PID" 2>/dev/null && sleep 0.1
            tail -n 1 "$STATE_DIR/netsim.$S_QUEUE.log" 2>/dev/null | sed 's/^/  /'
        fi
        echo "  rules (packets bytes):"
        # tr: iptables-nft prints a stray NUL after the bpf bytecode.
        ipt -L "$CHAIN" -n -v -x 2>/dev/null | tail -n +3 | tr -d '\0' | sed 's/^/    /'
    else
        local c
        for c in iptables-nft iptables-legacy; do
            command -v "$c" >/dev/null 2>&1 && chain_exists "$c" &&
                echo "  warning: stale $c chain $CHAIN exists; run zones.sh off" && rc=0
        done
    fi
    return "$rc"
}

cmd_run() {
    local -a on_args=()
    while (($#)) && [[ $1 != -- ]]; do
        on_args+=("$1")
        shift
    done
    [[ ${1:-} == -- ]] || die "run: expected -- COMMAND"
    shift
    (($#)) || die "run: no COMMAND"
    cmd_on "${on_args[@]}"
    trap 'cmd_off >/dev/null' EXIT
    # In the background so that `wait` returns on a signal (a foreground child would make bash
    # defer the trap until it ends); <&0 keeps stdin, which bash would otherwise replace.
    "$@" <&0 &
    RUN_CHILD=$!
    trap 'stop_child; exit 130' INT
    trap 'stop_child; exit 143' TERM
    local rc=0
    wait "$RUN_CHILD" || rc=$?
    RUN_CHILD=""
    exit "$rc"
}

# Asynchronous children of a script ignore SIGINT, so the command gets SIGTERM, then SIGKILL.
stop_child() {
    local i
    [[ -n ${RUN_CHILD:-} ]] || return 0
    kill -TERM "$RUN_CHILD" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$RUN_CHILD" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$RUN_CHILD" 2>/dev/null || true
}

main() {
    local cmd=${1:-help}
    (($#)) && shift
    case $cmd in
    on) cmd_on "$@" ;;
    partition) cmd_partition "$@" ;;
    heal) cmd_heal "$@" ;;
    off) cmd_off "$@" ;;
    status) cmd_status "$@" ;;
    run) cmd_run "$@" ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

ARGS=("$@")
main "$@"
