#!/usr/bin/env bash
# keel and etcd side by side: the same workloads against a fresh 3-member cluster of each, in
# turn (keel, etcd, keel, etcd, ...), with and without simulated zone latency; prints the
# medians of the rounds with the keel/etcd ratios and writes them as JSON, text and a PNG chart.
#
#   bench/compare-etcd.sh [--rounds N] [--quick] [--no-zones] [--duration S] [--out PREFIX]
#                         [--no-build] [--keel-ports C,P] [--only LIST] [--gw-listen A]
#
#   --rounds N     rounds of (keel, etcd) (default 3)
#   --quick        smoke test: 2 s runs, 1 round, results under build/compare-etcd/
#   --no-zones     skip the runs with zone latency
#   --duration S   seconds per run (default 10; 2 with --quick)
#   --out PREFIX   results go to PREFIX.json, PREFIX.txt, PREFIX.png
#                  (default bench/results/compare-latest; build/compare-etcd/compare-quick)
#   --no-build     use build/release's keeld and keel-bench as they are (default: bring them up
#                  to date with an incremental build first)
#   --keel-ports C,P  start keel's members directly on client port C and peer port P instead of
#                  through scripts/cluster.sh (2379/2380), e.g. when another cluster holds those
#   --only LIST    run only the workloads named in LIST (comma-separated names or name prefixes,
#                  e.g. --only watch, --only put-c1,range, --only gw); the preload is always done;
#                  a gw-X row also runs X on keel and etcd (its ratio and added p50 need them)
#   --gw-listen A  where keel-gateway listens for the gw rows (default 127.0.0.1:23790)
#
# Member i of each cluster lives in zone z<i> on 127.0.i.1: keel on ports 2379/2380 (through
# scripts/cluster.sh), etcd (Debian's etcd-server, 3.4) on 12379/12380 with heartbeat 100 ms,
# election 1000 ms and fsync on (the defaults). The load comes from build/release/bench/keel-bench
# for keel and from bench/etcd-driver (Go, clientv3; same flags, same JSON) for etcd; both route
# writes and linearizable reads to the leader. The gw rows (etcd driver -> keel-gateway -> keel)
# run after keel's own runs on the same fresh cluster: build/release's keel-gateway in front of
# its members, and etcd-driver given the gateway's address alone (--target spread: every
# connection to that one endpoint; the gateway forwards to keel's leader); their ratio is
# gateway/etcd against etcd's row of the same workload, and a note gives the p50 the gateway adds
# over native keel (gw p50 - keel p50). The watch rows create their watchers (over the
# whole key space) first, then put; their r/s is watch events delivered per second over all
# watchers, and watch-latency's p50/p99 is put -> event latency (the put's send time rides in
# its value; both ends on the load generator's clock). For them both load generators are given
# the leader alone (etcd-driver routes there anyway), so that the leader serves the watches on
# both systems: keel's client would create them on whichever member it reached first, and a
# follower's watch sees each commit one round of appends later and can start behind the last
# acknowledged write. The lease rows (also given the leader alone, for the same reason: lease-churn
# watches its prefix): lease-keepalive grants 10,000 leases (TTL 600 s) and then sends keep-alives
# round-robin over them, one in flight per client (etcd-driver: raw LeaseKeepAlive stream messages,
# one stream per client): with 1 client, one keep-alive at a time; "flooded", one connection with
# 256 in flight (etcd: 256 streams on one connection); r/s = keep-alives per second, p50/p99 their
# latency. Both drivers keep every lease alive once before the timed run: keel commits the first
# renewal after a grant, and any renewal of a lease left unrenewed for its checkpoint interval
# (--lease-checkpoint-interval-ms, 5 s; never early: server/lessor.h), so without the warm-up a
# 10 s run of one client would time mostly those commits (~0.8 ms each); etcd 3.4 commits none
# (it does not checkpoint). lease-churn grants
# 10,000 leases with the minimum TTL (2 s on both with a 1000 ms election timeout), puts one key
# with each, and waits (at most 30 s past the last due time) for their DELETE events on a watch of
# the prefix: p50/p99 = expiry lag = DELETE arrival - (grant acknowledged + TTL), r/s = expiries per
# second from the first due time to the last DELETE; the notes under the table add the largest
# lag, how many expired, and the "max write stall" (largest gap between two completions of one
# writer putting in a closed loop while the leases expire). Needs root (or password-less sudo) only to install
# missing Debian packages and for scripts/zones.sh. Only loopback traffic; everything it starts
# it stops (by PID), and it removes its temporary directory, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

rounds=3
quick=0
zones_wanted=1
duration=
out=
build=1
keel_ports=
only=
gw_addr=127.0.0.1:23790
while [ $# -gt 0 ]; do
  case "$1" in
  --rounds) rounds=${2:-}; shift 2 || usage ;;
  --quick) quick=1; shift ;;
  --no-zones) zones_wanted=0; shift ;;
  --duration) duration=${2:-}; shift 2 || usage ;;
  --out) out=${2:-}; shift 2 || usage ;;
  --no-build) build=0; shift ;;
  --keel-ports) keel_ports=${2:-}; shift 2 || usage ;;
  --only) only=${2:-}; shift 2 || usage ;;
  --gw-listen) gw_addr=${2:-}; shift 2 || usage ;;
  -h | --help) usage ;;
  *) echo "compare-etcd: unknown option '$1'" >&2; usage ;;
  esac
done
if [ $quick -eq 1 ]; then
  rounds=1
  duration=${duration:-2}
  out=${out:-build/compare-etcd/compare-quick}
fi
duration=${duration:-10}
out=${out:-bench/results/compare-latest}
[[ "$rounds" =~ ^[1-9][0-9]?$ ]] || { echo "compare-etcd: --rounds must be 1..99" >&2; exit 2; }
if [ -n "$keel_ports" ]; then
  [[ "$keel_ports" =~ ^([0-9]+),([0-9]+)$ ]] || { echo "compare-etcd: --keel-ports CLIENT,PEER" >&2; exit 2; }
  keel_cport=${BASH_REMATCH[1]} keel_pport=${BASH_REMATCH[2]}
else
  keel_cport=2379 keel_pport=2380
fi
[[ "$duration" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "compare-etcd: bad --duration" >&2; exit 2; }
[[ "$gw_addr" =~ ^[0-9.]+:[0-9]+$ ]] || { echo "compare-etcd: --gw-listen ADDR:PORT" >&2; exit 2; }
[[ -z "$only" || "$only" =~ ^[a-z0-9-]+(,[a-z0-9-]+)*$ ]] || { echo "compare-etcd: --only NAME[,NAME...]" >&2; exit 2; }

log() { printf '%s compare-etcd: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# --- what it needs ----------------------------------------------------------------------------

need_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing packages: ${missing[*]}; not root and no password-less sudo: sudo apt-get install -y ${missing[*]}"
    fi
  fi
  # The package's service must not grab the ports: nothing is started on install here (no
  # systemd in containers); where there is one, etcd's unit listens on 127.0.0.1:2379 only.
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

need_packages etcd-server golang-go golang-etcd-server-dev gnuplot-nox jq iproute2
scripts/deps.sh
# The zone simulation (scripts/zones.sh) needs iptables and keel-netsim, built on libnetfilter-queue.
if [ $zones_wanted -eq 1 ] && [ "$(id -u)" -eq 0 ]; then
  need_packages iptables libnetfilter-queue-dev
fi

keel_bench=$root/build/release/bench/keel-bench
keeld=$root/build/release/server/keeld
netsim=$root/build/release/bench/keel-netsim
keelctl=$root/build/release/client/keelctl
gateway=$root/build/release/gateway/keel-gateway
targets=(keeld keel-bench keelctl keel-gateway)
[ $zones_wanted -eq 1 ] && targets+=(keel-netsim)
if [ ! -x "$keel_bench" ] || [ ! -x "$keeld" ] || [ $build -eq 1 ]; then
  log "building keel (build/release: ${targets[*]})"
  mkdir -p build/compare-etcd
  blog=build/compare-etcd/build.log
  if [ ! -f build/release/CMakeCache.txt ] || { [ $zones_wanted -eq 1 ] && [ ! -x "$netsim" ]; }; then
    cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$blog" 2>&1 ||
      { cat "$blog" >&2; die "cmake failed"; }
  fi
  for t in "${targets[@]}"; do
    if ! cmake --build build/release -j2 --target "$t" >"$blog" 2>&1; then
      if [ "$t" = keel-netsim ]; then
        log "keel-netsim did not build (libnetfilter-queue-dev?); zone runs will be skipped"
      elif [ "$t" = keel-gateway ] && [ ! -x "$gateway" ]; then
        log "keel-gateway did not build; the gw rows will be missing:"
        tail -5 "$blog" >&2
      elif [ -x "$keel_bench" ] && [ -x "$keeld" ]; then
        log "building $t failed (the tree is changing?); using the binaries already built:"
        tail -5 "$blog" >&2
      else
        tail -20 "$blog" >&2
        die "building $t failed"
      fi
    fi
  done
fi

git_rev=$(git describe --always --dirty 2>/dev/null || echo unknown)
driver=$(etcd_driver "$root" "$git_rev") || die "building bench/etcd-driver failed"
etcd_version=$(etcd --version | sed -n 's/^etcd Version: //p')

# --- state and cleanup ------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-compare.XXXXXX")
bench_pid=
gw_pid=
etcd_pids=()
keel_dir=
zones_active=0
runs=$work/runs.jsonl
: >"$runs"
failures=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  [ $zones_active -eq 1 ] && zones_off
  [ -n "$gw_pid" ] && gw_stop
  [ -n "$keel_dir" ] && keel_stop
  [ ${#etcd_pids[@]} -gt 0 ] && etcd_stop
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- CPU accounting (builtins only, so that no child is reaped between the readings) ----------

clk_tck=$(getconf CLK_TCK)
ncpu=$(nproc)
machine_busy() { # -> REPLY: busy ticks of the whole machine since boot
  local _cpu u n s i w q sq st _rest
  read -r _cpu u n s i w q sq st _rest </proc/stat
  REPLY=$((u + n + s + q + sq + st))
}
procs_ticks() { # PID... -> TICKS: user+system ticks of each of those processes
  local p f
  TICKS=()
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ] && read -r -a f <"/proc/$p/stat" 2>/dev/null; then
      TICKS+=($((f[13] + f[14])))
    else
      TICKS+=(0)
    fi
  done
}
procs_reset_peak() { # PID...: start a new peak RSS (VmHWM) for each (clear_refs 5)
  local p
  for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}
procs_peak_mb() { # PID... -> REPLY: the largest VmHWM among them, in MB (0 when unreadable)
  local p kb max=0
  for p in "$@"; do
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    [ -n "$kb" ] && [ "$kb" -gt "$max" ] && max=$kb
  done
  REPLY=$((max / 1024))
}
children_ms() { # -> REPLY: user+system ms of this shell's reaped children, from `times`
  local line ms=0 v
  { read -r _; read -r line; } <"$work/times"
  for v in $line; do # like 0m1.234s
    [[ $v =~ ^([0-9]+)m([0-9]+)[.]([0-9]{3}) ]] || continue
    ms=$((ms + (10#${BASH_REMATCH[1]} * 60 + 10#${BASH_REMATCH[2]}) * 1000 + 10#${BASH_REMATCH[3]}))
  done
  REPLY=$ms
}

# --- ports and clusters -----------------------------------------------------------------------

port_busy() { # ADDR:PORT -> 0 when something listens there
  ss -Hltn "sport = :${1##*:}" 2>/dev/null | awk -v a="$1" '$4 == a {f = 1} END {exit !f}'
}
port_owner() { # ADDR:PORT -> the pid listening there
  ss -Hltnp "sport = :${1##*:}" 2>/dev/null | awk -v a="$1" '$4 == a' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}
wait_ports_free() { # ADDR:PORT...
  local a i
  for i in $(seq 1 240); do
    local busy=
    for a in "$@"; do port_busy "$a" && busy+=" $a(pid $(port_owner "$a"))"; done
    [ -z "$busy" ] && return 0
    [ "$i" -eq 1 ] && log "waiting (at most 120 s) for ports in use by others:$busy"
    sleep 0.5
  done
  log "ports still in use:$busy; stop that cluster first (this script ends only what it started)"
  return 1
}
check_owners() { # "PID..." ADDR:PORT... -> every address is served by one of PIDs
  local pids=" $1 " a o
  shift
  for a in "$@"; do
    o=$(port_owner "$a")
    [[ -n "$o" && "$pids" == *" $o "* ]] || { log "$a is served by pid '${o:-none}', not by ours"; return 1; }
  done
}

members=3
keel_eps=""; etcd_eps=""; keel_addrs=(); etcd_addrs=(); etcd_initial=""; keel_initial=""
for i in $(seq 1 $members); do
  keel_eps+="${keel_eps:+,}127.0.$i.1:$keel_cport"
  etcd_eps+="${etcd_eps:+,}127.0.$i.1:12379"
  keel_addrs+=("127.0.$i.1:$keel_cport" "127.0.$i.1:$keel_pport")
  keel_initial+="${keel_initial:+,}m$i=127.0.$i.1:$keel_pport@z$i"
  etcd_addrs+=("127.0.$i.1:12379" "127.0.$i.1:12380")
  etcd_initial+="${etcd_initial:+,}m$i=http://127.0.$i.1:12380"
done

keel_pids() {
  local f p=()
  for f in "$keel_dir"/m*.pid; do [ -f "$f" ] && p+=("$(cat "$f")"); done
  echo "${p[*]}"
}

wait_healthy() { # BENCH ENDPOINTS -> 0 once a put is acknowledged (at most 20 s)
  local i
  for i in $(seq 1 40); do
    "$1" --endpoints "$2" --total 1 --timeout-ms 1000 --key-space-size 1 put >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

keel_start() {
  wait_ports_free "${keel_addrs[@]}" || return 1
  keel_dir=$work/keel
  if [ -z "$keel_ports" ]; then
    KEEL_CLUSTER_DIR=$keel_dir KEELD=$keeld scripts/cluster.sh start --nodes $members >"$work/cluster.out" 2>&1 ||
      { cat "$work/cluster.out" >&2; return 1; }
  else
    # As scripts/cluster.sh does it, on other ports.
    local i
    mkdir -p "$keel_dir"
    for i in $(seq 1 $members); do
      "$keeld" --name "m$i" --data-dir "$keel_dir/m$i" --listen-client "127.0.$i.1:$keel_cport" \
        --listen-peer "127.0.$i.1:$keel_pport" --initial-cluster "$keel_initial" >>"$keel_dir/m$i.log" 2>&1 &
      echo $! >"$keel_dir/m$i.pid"
    done
  fi
  wait_healthy "$keel_bench" "$keel_eps" || { log "keel cluster never acknowledged a put"; tail -3 "$keel_dir"/m*.log >&2; return 1; }
  check_owners "$(keel_pids)" "${keel_addrs[@]}" || { tail -3 "$keel_dir"/m*.log >&2; return 1; }
}
keel_stop() {
  [ -n "$keel_dir" ] || return 0 # never let cluster.sh fall back to its default directory
  if [ -z "$keel_ports" ]; then
    KEEL_CLUSTER_DIR=$keel_dir scripts/cluster.sh stop >/dev/null 2>&1 || true
  else
    local pids
    read -r -a pids <<<"$(keel_pids)"
    stop_pids 10 "${pids[@]}"
  fi
  rm -rf "$keel_dir"
  keel_dir=
}

etcd_start() {
  wait_ports_free "${etcd_addrs[@]}" || return 1
  local i
  mkdir -p "$work/etcd"
  for i in $(seq 1 $members); do
    etcd --name "m$i" --data-dir "$work/etcd/m$i" \
      --listen-client-urls "http://127.0.$i.1:12379" --advertise-client-urls "http://127.0.$i.1:12379" \
      --listen-peer-urls "http://127.0.$i.1:12380" --initial-advertise-peer-urls "http://127.0.$i.1:12380" \
      --initial-cluster "$etcd_initial" --initial-cluster-state new --initial-cluster-token keel-compare \
      --heartbeat-interval 100 --election-timeout 1000 --logger zap --log-level warn \
      >>"$work/etcd/m$i.log" 2>&1 &
    etcd_pids+=($!)
  done
  wait_healthy "$driver" "$etcd_eps" || { log "etcd cluster never acknowledged a put"; tail -3 "$work"/etcd/m*.log >&2; return 1; }
  check_owners "${etcd_pids[*]}" "${etcd_addrs[@]}"
}
etcd_stop() {
  stop_pids 10 "${etcd_pids[@]}"
  etcd_pids=()
  rm -rf "$work/etcd"
}

# keel-gateway in front of the running keel cluster, on $gw_addr.
gw_start() {
  [ -x "$gateway" ] || { log "no $gateway"; return 1; }
  wait_ports_free "$gw_addr" || return 1
  "$gateway" --listen "$gw_addr" --endpoints "$keel_eps" --log-level warn >>"$work/gateway.log" 2>&1 &
  gw_pid=$!
  local i
  for i in $(seq 1 40); do
    kill -0 "$gw_pid" 2>/dev/null || break
    "$driver" --endpoints "$gw_addr" --target spread --total 1 --timeout-ms 1000 --key-space-size 1 put \
      >/dev/null 2>&1 && { check_owners "$gw_pid" "$gw_addr" && return 0; break; }
    sleep 0.5
  done
  log "keel-gateway never acknowledged a put"
  tail -3 "$work/gateway.log" >&2
  return 1
}
gw_stop() {
  [ -n "$gw_pid" ] || return 0
  local i
  kill -TERM "$gw_pid" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$gw_pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
  gw_pid=
}

# --- zones ------------------------------------------------------------------------------------

zones_note=""
zones_ok=0
zones_delay=1ms
if [ $zones_wanted -eq 0 ]; then
  zones_note="skipped (--no-zones)"
elif [ ! -x scripts/zones.sh ]; then
  zones_note="skipped: scripts/zones.sh is absent"
elif [ "$(id -u)" -ne 0 ]; then
  zones_note="skipped: scripts/zones.sh needs root"
elif ! zones_help=$(scripts/zones.sh --help 2>&1) || ! grep -q -- '--ports' <<<"$zones_help"; then
  zones_note="skipped: this scripts/zones.sh cannot classify etcd's traffic by port (--ports)"
elif [ ! -x "$netsim" ]; then
  zones_note="skipped: no keel-netsim (build/release/bench/keel-netsim)"
else
  zones_ok=1
  zones_note="$zones_delay one way between zones z1..z$members on the peer links (keel: by zone address; etcd: by peer port 12380)"
fi
log "zone latency: $zones_note"

# keel members bind their zone addresses, so zones.sh sees their zones; etcd's packets all come
# from 127.0.0.1, so its peer port marks them instead. Either way exactly the peer traffic is
# delayed; the load generators run from 127.0.0.1, outside every zone, undelayed.
zones_on() { # SYSTEM -> 0 when the delay is in place
  local args=(on --delay "$zones_delay" --zones "1-$members" --netsim "$netsim")
  [ "$1" = etcd ] && args+=(--ports 12380)
  local i
  for i in $(seq 1 60); do
    scripts/zones.sh status >/dev/null 2>&1 || break
    [ "$i" -eq 1 ] && log "the zone simulation is on, and not by us (scripts/zones.sh status): waiting at most 30 s"
    if [ "$i" -eq 60 ]; then
      log "still on: this round's zone runs of $1 are skipped"
      return 1
    fi
    sleep 0.5
  done
  zones_active=1
  if ! scripts/zones.sh "${args[@]}" >>"$work/zones.log" 2>&1; then
    log "scripts/zones.sh ${args[*]} refused; zone runs skipped from now on:"
    tail -5 "$work/zones.log" >&2
    zones_off
    zones_ok=0
    zones_note="skipped: scripts/zones.sh ${args[*]} refused"
    return 1
  fi
}
# zones_intact SYSTEM -> 0 when zones.sh still runs our setup; ZDELAYED: keel-netsim's count of
# delayed packets (empty when zones.sh does not say).
zones_intact() {
  local st
  ZDELAYED=
  st=$(scripts/zones.sh status 2>/dev/null) || true
  grep -q "zones: 1\.\.$members\b" <<<"$st" && grep -q "delay ${zones_delay%ms}000us.*(running)" <<<"$st" || return 1
  if [ "$1" = etcd ]; then grep -q 'etcd ports: 12380$' <<<"$st" || return 1; fi
  if [ "$1" = keel ] && grep -q 'etcd ports:' <<<"$st"; then return 1; fi
  ZDELAYED=$(grep -o 'delayed=[0-9]*' <<<"$st" | head -1 | cut -d= -f2)
  return 0
}
zones_off() {
  scripts/zones.sh off >>"$work/zones.log" 2>&1 || log "scripts/zones.sh off failed; check scripts/zones.sh status"
  zones_active=0
}

# --- workloads --------------------------------------------------------------------------------

common=(--key-size 8 --val-size 256 --key-space-size 100000 --duration "$duration")
# name | label | zone latency? | bench flags
workloads=(
  "put-c1|put, 1 client|0|put --conns 1 --clients 1"
  "put-c64|put, 64 clients / 8 conns|0|put --conns 8 --clients 64"
  "put-c256|put, 256 clients / 16 conns|0|put --conns 16 --clients 256"
  "range-l-c64|range linearizable, 64 / 8|0|range --consistency l --conns 8 --clients 64"
  "range-s-c64|range serializable, 64 / 8|0|range --consistency s --conns 8 --clients 64"
  "txn-put-c64|txn-put, 64 / 8|0|txn-put --conns 8 --clients 64"
  "watch-lat-w100|watch-latency 100 w, 500 puts/s|0|watch-latency --watchers 100 --conns 1 --clients 1 --rate 500"
  "watch-w1000|watch 1000 w, 16 / 4 (events/s)|0|watch --watchers 1000 --conns 4 --clients 16"
  "watch-lat-w10k|watch-lat 10k w, 1000 puts/s|0|watch-latency --watchers 10000 --conns 4 --clients 4 --rate 1000 --total 5000"
  "lease-keepalive|lease-keepalive 10k, 1 client|0|lease-keepalive --leases 10000 --conns 1 --clients 1"
  "lease-keepalive-flood|lease-keepalive 10k, 1 conn, 256 in flight|0|lease-keepalive --leases 10000 --conns 1 --clients 256"
  "lease-churn|lease-churn 10k: expiry lag|0|lease-churn --leases 10000 --lease-timeout 30"
  "zone-put-c64|put, 64 / 8, 1 ms zones|1|put --conns 8 --clients 64"
  "zone-put-c1|put, 1 client, 1 ms zones|1|put --conns 1 --clients 1"
  "gw-put-c1|gw put, 1 client|0|put --conns 1 --clients 1"
  "gw-put-c64|gw put, 64 clients / 8 conns|0|put --conns 8 --clients 64"
  "gw-range-s-c64|gw range serializable, 64 / 8|0|range --consistency s --conns 8 --clients 64"
)
# The gw rows' goals (issue 13): gateway/etcd req/s at least this; added p50 over keel at most
# gw_goal_p50_ms.
gw_goal_json='{"gw-put-c64": 2, "gw-range-s-c64": 4}'
gw_goal_p50_ms=0.15

selected() { # NAME -> 0 when --only is empty or names it (or a prefix of it), or names gw-NAME
  [ -z "$only" ] && return 0
  local o
  for o in ${only//,/ }; do [[ "$1" == "$o"* || "gw-$1" == "$o"* ]] && return 0; done
  return 1
}
if [ -n "$only" ]; then
  n_sel=0
  for w in "${workloads[@]}"; do selected "${w%%|*}" && n_sel=$((n_sel + 1)); done
  [ $n_sel -gt 0 ] || { echo "compare-etcd: --only '$only' selects no workload" >&2; exit 2; }
fi

# run_one ROUND SYSTEM NAME FLAGS... : one bench run, recorded as a line of $runs. For the watch
# workloads rps is watch events delivered per second (all watchers), p50/p99 put -> event latency
# (watch-latency; null for watch), and the writers' own put figures go under "puts".
run_one() {
  local round=$1 sys=$2 name=$3
  shift 3
  local bin eps srv out=$work/run.json
  local extra=() g0=0 g1=0
  case $sys in
  keel) bin=$keel_bench eps=$keel_eps srv=$(keel_pids) ;;
  gw) bin=$driver eps=$gw_addr srv=$(keel_pids) extra=(--target spread) ;;
  *) bin=$driver eps=$etcd_eps srv=${etcd_pids[*]} ;;
  esac
  [ -n "$run_eps" ] && eps=$run_eps
  local m0 m1 s0 s1 c0 c1 t0 t1 rc=0 i
  [ "$sys" = gw ] && { procs_ticks "$gw_pid"; g0=${TICKS[0]}; }
  # shellcheck disable=SC2086
  procs_ticks $srv; s0=("${TICKS[@]}")
  # shellcheck disable=SC2086
  procs_reset_peak $srv
  machine_busy; m0=$REPLY
  times >"$work/times"; children_ms; c0=$REPLY
  t0=$EPOCHREALTIME
  "$bin" --endpoints "$eps" "$@" "${extra[@]}" --seed "$round" --json >"$out" 2>"$work/run.err" &
  bench_pid=$!
  wait "$bench_pid" || rc=$?
  t1=$EPOCHREALTIME
  times >"$work/times"; children_ms; c1=$REPLY
  machine_busy; m1=$REPLY
  # shellcheck disable=SC2086
  procs_ticks $srv; s1=("${TICKS[@]}")
  # shellcheck disable=SC2086
  procs_peak_mb $srv; local peak_mb=$REPLY
  [ "$sys" = gw ] && { procs_ticks "$gw_pid"; g1=${TICKS[0]}; }
  bench_pid=
  local srv_sum=0 srv_max=0 d
  for i in "${!s1[@]}"; do
    d=$((s1[i] - s0[i]))
    srv_sum=$((srv_sum + d))
    [ $d -gt $srv_max ] && srv_max=$d
  done
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
  if [ $rc -ne 0 ] || ! jq -e .summary "$out" >/dev/null 2>&1 ||
    { [[ "$name" == watch* ]] && ! jq -e .watch "$out" >/dev/null 2>&1; }; then
    log "  $sys $name failed (exit $rc): $(tail -c 300 "$work/run.err" | tr '\n' ' ')"
    failures=$((failures + 1))
    jq -nc --argjson r "$round" --arg s "$sys" --arg w "$name" --argjson rc "$rc" \
      '{round: $r, system: $s, workload: $w, ok: false, exit: $rc}' >>"$runs"
    return 0
  fi
  jq -c --argjson r "$round" --arg s "$sys" --arg w "$name" --argjson wall "$wall" \
    --argjson srv "$srv_sum" --argjson srvmax "$srv_max" --argjson drv "$((c1 - c0))" --argjson busy "$((m1 - m0))" \
    --argjson gwt "$((g1 - g0))" --argjson hz "$clk_tck" --argjson ncpu "$ncpu" --argjson peak "$peak_mb" '
    def r2: . * 100 | round / 100;
    def ms: if . == null then null else . * 1000 | round / 1000 end;
    {round: $r, system: $s, workload: $w, ok: true,
     requests: .summary.requests, rps: (.summary.rps | round),
     p50_ms: (.summary.p50_ms | ms), p99_ms: (.summary.p99_ms | ms),
     p99_9_ms: (.summary["p99.9_ms"] | ms),
     errors: ([.errors[]] | add // 0), member_peak_rss_mb: $peak,
     cpu_cores: ({servers: ($srv / $hz / $wall | r2), busiest_member: ($srvmax / $hz / $wall | r2), driver: ($drv / 1000 / $wall | r2),
                 machine: ($busy / $hz / $wall | r2), of: $ncpu}
                + if $s == "gw" then {gateway: ($gwt / $hz / $wall | r2)} else {} end)}
    + if .watch == null then {} else
        {rps: (.watch.events_per_sec | round), p50_ms: (.watch.event_latency.p50_ms | ms),
         p99_ms: (.watch.event_latency.p99_ms | ms), p99_9_ms: (.watch.event_latency["p99.9_ms"] | ms),
         watch: {endpoints: .config.endpoints, watchers: .watch.watchers, events: .watch.events,
                 events_expected: .watch.events_expected,
                 complete: (.watch.events >= .watch.events_expected and .watch.events_expected > 0),
                 latency_samples: .watch.event_latency.requests},
         puts: {requests: .summary.requests, rps: (.summary.rps | round), p50_ms: (.summary.p50_ms | ms),
                p99_ms: (.summary.p99_ms | ms)}} end
    + if .lease == null then {} else
        {lease: ({leases: .lease.leases, granted: .lease.granted, granted_ttl_s: .lease.granted_ttl_s,
                  grant_rps: (.lease.grant.rps | round), revoked: .lease.revoked}
                 + if .config.workload != "lease-churn" then {} else
                     {attached: .lease.attached, expired: .lease.expired, complete: .lease.complete,
                      max_lag_ms: (.lease.max_lag_ms | ms), expiry_span_s: .lease.expiry_span_s,
                      stall_max_gap_ms: (if .lease.stall.enabled then (.lease.stall.max_gap_ms | ms) else null end),
                      stall_puts: .lease.stall.puts} end)} end' "$out" >>"$runs"
  tail -n 1 "$runs" | jq -r 'if .lease.expired != null then
    "  \(.system) \(.workload): \(.lease.expired) of \(.lease.attached) leased keys expired, lag p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, max \(.lease.max_lag_ms) ms, \(.rps) expiries/s; max write stall \(.lease.stall_max_gap_ms) ms; cores busy: servers \(.cpu_cores.servers) (busiest member \(.cpu_cores.busiest_member))\(if .cpu_cores.gateway == null then "" else ", gateway \(.cpu_cores.gateway)" end), driver \(.cpu_cores.driver), machine \(.cpu_cores.machine)"
    elif .watch == null then
    "  \(.system) \(.workload): \(.rps) req/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms; cores busy: servers \(.cpu_cores.servers) (busiest member \(.cpu_cores.busiest_member))\(if .cpu_cores.gateway == null then "" else ", gateway \(.cpu_cores.gateway)" end), driver \(.cpu_cores.driver), machine \(.cpu_cores.machine)"
    else
    "  \(.system) \(.workload): \(.watch.watchers) watchers, \(.rps) events/s (\(.watch.events) of \(.watch.events_expected) events)" +
    (if .p50_ms == null then "" else ", put -> event p50 \(.p50_ms) ms, p99 \(.p99_ms) ms" end) +
    "; puts \(.puts.rps) req/s, p50 \(.puts.p50_ms) ms; largest member peak RSS \(.member_peak_rss_mb) MB; cores busy: servers \(.cpu_cores.servers) (busiest member \(.cpu_cores.busiest_member))\(if .cpu_cores.gateway == null then "" else ", gateway \(.cpu_cores.gateway)" end), driver \(.cpu_cores.driver), machine \(.cpu_cores.machine)" end' >&2
  if jq -e '.watch != null and (.watch.complete | not)' <<<"$(tail -n 1 "$runs")" >/dev/null; then
    log "  $sys $name: not every event arrived within 30 s of the last put (counted as delivered so far)"
  fi
  if jq -e '.lease.complete == false' <<<"$(tail -n 1 "$runs")" >/dev/null; then
    log "  $sys $name: not every leased key expired within 30 s of the last due time (lags of those that did)"
  fi
  if jq -e '.watch != null and .watch.events > .watch.events_expected' <<<"$(tail -n 1 "$runs")" >/dev/null; then
    log "  $sys $name: more events than puts x watchers: the watches started behind the last write before the run"
  fi
}

# leader_eps SYSTEM -> REPLY: the endpoints for the watch and lease rows: the leader's alone (see
# the top).
leader_eps() {
  if [ "$1" = etcd ]; then
    REPLY=$etcd_eps # etcd-driver --target auto: every connection to the leader
    return 0
  fi
  local l=
  if [ -x "$keelctl" ]; then
    l=$("$keelctl" --endpoints "$keel_eps" endpoint status 2>/dev/null | awk -F', ' '$5 == "true" && !f {print $1; f = 1}') || l=
  fi
  if [ -z "$l" ]; then
    log "  keel's leader not found (keelctl endpoint status): the watch rows get every endpoint"
    REPLY=$keel_eps
  else
    REPLY=$l
  fi
}

run_eps= # when set: run_one's endpoints instead of the system's

# run_system ROUND SYSTEM: a fresh cluster, the preload, every workload, then stop it.
run_system() {
  local round=$1 sys=$2 bin eps w name label zoned flags
  if [ "$sys" = keel ]; then bin=$keel_bench eps=$keel_eps; else bin=$driver eps=$etcd_eps; fi
  log "round $round: $sys: starting a fresh 3-member cluster"
  if ! "${sys}_start"; then
    log "round $round: $sys cluster did not start; its runs are missing from this round"
    failures=$((failures + 1))
    "${sys}_stop"
    return 0
  fi
  # Preload: every key of the space, so that ranges hit existing keys.
  if ! "$bin" --endpoints "$eps" put --sequential-keys --total 100000 --conns 8 --clients 64 \
    --key-size 8 --val-size 256 --key-space-size 100000 --json >"$work/preload.json" 2>"$work/run.err"; then
    log "round $round: $sys preload failed: $(tail -c 300 "$work/run.err")"
    failures=$((failures + 1))
  else
    log "  $sys preload: 100000 keys at $(jq '.summary.rps | round' "$work/preload.json") req/s"
  fi
  for w in "${workloads[@]}"; do
    IFS='|' read -r name label zoned flags <<<"$w"
    [ "$zoned" = 1 ] && continue
    [[ "$name" == gw-* ]] && continue
    selected "$name" || continue
    run_eps=
    if [[ "$name" == watch* || "$name" == lease* ]]; then leader_eps "$sys"; run_eps=$REPLY; fi
    # shellcheck disable=SC2086
    run_one "$round" "$sys" "$name" $flags "${common[@]}"
    run_eps=
  done
  # The gw rows: etcd's driver -> keel-gateway -> this same cluster.
  local any_gw=0
  for w in "${workloads[@]}"; do
    IFS='|' read -r name label zoned flags <<<"$w"
    [[ "$name" == gw-* ]] && selected "$name" && any_gw=1
  done
  if [ "$sys" = keel ] && [ $any_gw -eq 1 ]; then
    log "  starting keel-gateway on $gw_addr in front of keel"
    if gw_start; then
      for w in "${workloads[@]}"; do
        IFS='|' read -r name label zoned flags <<<"$w"
        [[ "$name" == gw-* ]] || continue
        selected "$name" || continue
        # shellcheck disable=SC2086
        run_one "$round" gw "$name" $flags "${common[@]}"
      done
    else
      log "round $round: keel-gateway did not start; the gw runs are missing from this round"
      failures=$((failures + 1))
    fi
    gw_stop
  fi
  local any_zoned=0
  for w in "${workloads[@]}"; do
    IFS='|' read -r name label zoned flags <<<"$w"
    [ "$zoned" = 1 ] && selected "$name" && any_zoned=1
  done
  if [ $zones_ok -eq 1 ] && [ $any_zoned -eq 1 ] && zones_on "$sys"; then
    local d0
    for w in "${workloads[@]}"; do
      IFS='|' read -r name label zoned flags <<<"$w"
      [ "$zoned" = 1 ] || continue
      selected "$name" || continue
      zones_intact "$sys" || { log "  $sys $name skipped: the zone simulation is not as we set it"; break; }
      d0=$ZDELAYED
      # shellcheck disable=SC2086
      run_one "$round" "$sys" "$name" $flags "${common[@]}"
      # zones.sh is machine-wide: someone else's `zones.sh off|on` during the run voids it.
      if ! zones_intact "$sys" || { [ -n "$d0" ] && [ -n "$ZDELAYED" ] && [ "$ZDELAYED" -le "$d0" ]; }; then
        log "  $sys $name discarded: the zone simulation changed or delayed nothing during the run"
        sed -i '$d' "$runs"
        jq -nc --argjson r "$round" --arg s "$sys" --arg w "$name" \
          '{round: $r, system: $s, workload: $w, ok: false, reason: "zone simulation changed during the run"}' >>"$runs"
        failures=$((failures + 1))
        break
      fi
    done
    zones_off
  fi
  "${sys}_stop"
}

# --- main -------------------------------------------------------------------------------------

fsync_ms=$(dd if=/dev/zero of="$work/fsync.test" bs=4096 count=200 oflag=dsync 2>&1 |
  awk '/copied/ {for (i = 1; i <= NF; i++) if ($i == "s," || $i == "s") {printf "%.3f", $(i-1) / 200 * 1000; exit}}')
rm -f "$work/fsync.test"
log "keel $git_rev vs etcd $etcd_version; $rounds round(s) of ${duration}s runs; fsync (4 KiB O_DSYNC write) ${fsync_ms:-?} ms; $ncpu cpus"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for round in $(seq 1 "$rounds"); do
  run_system "$round" keel
  run_system "$round" etcd
done

# --- report -----------------------------------------------------------------------------------

mkdir -p "$(dirname "$out")"
wl_json=$(for w in "${workloads[@]}"; do
  IFS='|' read -r name label zoned flags <<<"$w"
  jq -nc --arg n "$name" --arg l "$label" --argjson z "$zoned" --arg f "$flags ${common[*]}" \
    '{name: $n, label: $l, zones: ($z == 1), flags: $f}
     + if ($n | startswith("watch")) then {measures: "rps: watch events delivered per second over all watchers; p50/p99: put -> event latency (watch-latency only); writer puts: under runs[].puts"} else {} end
     + if ($n | startswith("lease-keepalive")) then {measures: "rps: keep-alives per second; p50/p99: keep-alive latency; grants: under runs[].lease"} else {} end
     + if $n == "lease-churn" then {measures: "p50/p99: expiry lag (DELETE event - (grant acknowledged + TTL)), lower is better; rps: expiries per second from the first due time to the last DELETE; lease: max lag, expired of attached, max write stall (largest gap between completions of one closed-loop writer while waiting)"} else {} end'
done | jq -sc .)
jq -s --argjson wl "$wl_json" --arg started "$started" --arg rev "$git_rev" --arg ev "$etcd_version" \
  --argjson rounds "$rounds" --argjson quick "$quick" --arg dur "$duration" --arg zn "$zones_note" \
  --arg fsync "${fsync_ms:-}" --argjson ncpu "$ncpu" --arg kernel "$(uname -r)" \
  --argjson gwgoal "$gw_goal_json" --argjson gwp50 "$gw_goal_p50_ms" '
  def median: sort | length as $n | if $n == 0 then null
    elif $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end;
  # two decimals; four below 0.1, so that a small ratio (the lease-churn lags) does not read 0
  def ratio($a; $b): if $a == null or $b == null or $b == 0 then null
    else ($a / $b) as $q | if ($q | fabs) < 0.1 then ($q * 10000 | round / 10000) else ($q * 100 | round / 100) end end;
  . as $runs
  | {tool: "compare-etcd", started: $started, git_revision: $rev, etcd_version: $ev,
     machine: {cpus: $ncpu, kernel: $kernel, fsync_ms: ($fsync | tonumber? // null)},
     rounds: $rounds, quick: ($quick == 1), duration_s: ($dur | tonumber), zones: $zn,
     workloads: [$wl[] | . as $w
       | def agg($wn; $s): ([$runs[] | select(.workload == $wn and .ok and .system == $s)]) as $r
           | if ($r | length) == 0 then null else
             {rps: ([$r[].rps] | median | round), p50_ms: ([$r[].p50_ms | values] | median),
              p99_ms: ([$r[].p99_ms | values] | median), rounds: ($r | length),
              member_peak_rss_mb: ([$r[].member_peak_rss_mb | values] | median),
              cpu_cores: ({servers: ([$r[].cpu_cores.servers] | median),
                           busiest_member: ([$r[].cpu_cores.busiest_member] | median),
                           driver: ([$r[].cpu_cores.driver] | median),
                           machine: ([$r[].cpu_cores.machine] | median)}
                          + if $s == "gw" then {gateway: ([$r[].cpu_cores.gateway | values] | median)} else {} end),
              runs: [$r[] | {round, rps, p50_ms, p99_ms, p99_9_ms, errors}
                     + if .watch == null then {} else {watch, puts} end
                     + if .lease == null then {} else {lease} end]}
             + if ([$r[] | .lease.expired | values] | length) == 0 then {} else
                 {lease: {max_lag_ms: ([$r[].lease.max_lag_ms | values] | median),
                          stall_max_gap_ms: ([$r[].lease.stall_max_gap_ms | values] | median),
                          expired: ([$r[].lease.expired] | median), attached: ([$r[].lease.attached] | median),
                          complete: ([$r[].lease.complete] | all)}} end end;
         if ($w.name | startswith("gw-")) then
           # etcd driver -> keel-gateway -> keel, against the etcd and native keel runs of the
           # same workload: ratio = gateway/etcd; added = gateway - keel.
           ($w.name | ltrimstr("gw-")) as $b
           | $w + {compared_with: $b, gateway: agg($w.name; "gw"), keel: agg($b; "keel"), etcd: agg($b; "etcd")}
           | . + {ratio: {rps: ratio(.gateway.rps; .etcd.rps), p50: ratio(.gateway.p50_ms; .etcd.p50_ms),
                          p99: ratio(.gateway.p99_ms; .etcd.p99_ms)},
                  gateway_vs_keel: {
                    rps_ratio: ratio(.gateway.rps; .keel.rps),
                    added_p50_ms: (if .gateway.p50_ms == null or .keel.p50_ms == null then null
                                   else (.gateway.p50_ms - .keel.p50_ms) * 1000 | round / 1000 end),
                    added_p99_ms: (if .gateway.p99_ms == null or .keel.p99_ms == null then null
                                   else (.gateway.p99_ms - .keel.p99_ms) * 1000 | round / 1000 end)},
                  goals: ({max_added_p50_ms: $gwp50} + if $gwgoal[$w.name] == null then {} else {min_ratio_vs_etcd: $gwgoal[$w.name]} end)}
           | .goals += {met: ((.gateway_vs_keel.added_p50_ms != null and .gateway_vs_keel.added_p50_ms <= $gwp50)
                              and (.goals.min_ratio_vs_etcd == null or (.ratio.rps != null and .ratio.rps >= .goals.min_ratio_vs_etcd)))}
           | select(.gateway != null)
         else
           $w + {keel: agg($w.name; "keel"), etcd: agg($w.name; "etcd")}
           | . + {ratio: {rps: ratio(.keel.rps; .etcd.rps), p50: ratio(.keel.p50_ms; .etcd.p50_ms),
                          p99: ratio(.keel.p99_ms; .etcd.p99_ms)}}
           | select(.keel != null or .etcd != null)
         end],
     failed_runs: [$runs[] | select(.ok | not)]}' "$runs" >"$out.json"

# The table: medians of the rounds; ratio = keel / etcd (req/s: higher is better for keel;
# latencies: lower is better for keel).
{
  echo "keel $git_rev vs etcd $etcd_version, $rounds round(s), ${duration}s per run, medians; zone latency: $zones_note"
  echo
  printf '%-32s %9s %9s %6s | %8s %8s %6s | %8s %8s %6s\n' workload "keel r/s" "etcd r/s" ratio \
    "keel p50" "etcd p50" ratio "keel p99" "etcd p99" ratio
  printf '%s\n' "$(printf '%.0s-' $(seq 1 112))"
  jq -r '.workloads[] | (.gateway // .keel) as $k | [.label, $k.rps, .etcd.rps, .ratio.rps, $k.p50_ms, .etcd.p50_ms,
    .ratio.p50, $k.p99_ms, .etcd.p99_ms, .ratio.p99] | map(. // "-") | @tsv' "$out.json" |
    while IFS=$'\t' read -r l kr er rr k5 e5 r5 k9 e9 r9; do
      printf '%-32s %9s %9s %6s | %8s %8s %6s | %8s %8s %6s\n' "$l" "$kr" "$er" "$rr" "$k5" "$e5" "$r5" "$k9" "$e9" "$r9"
    done
  echo
  echo "latencies in ms; ratio = keel/etcd (req/s: >1 keel faster; latency: <1 keel faster)"
  if jq -e '[.workloads[].name | startswith("gw-")] | any' "$out.json" >/dev/null; then
    echo "gw rows: etcd-driver -> keel-gateway -> keel (the keel columns hold the gateway's figures; ratio = gateway/etcd,"
    echo "  against etcd's row of the same workload); goals: >= 2x etcd on put c64, >= 4x on range serializable, <= $gw_goal_p50_ms ms added p50"
    jq -r 'def f($x): if $x == null then "-" else "\($x)" end;
      .workloads[] | select(.name | startswith("gw-"))
      | "  \(.label): \(f(.gateway.rps)) req/s = \(f(.ratio.rps))x etcd\(if .goals.min_ratio_vs_etcd == null then "" else " (goal >= \(.goals.min_ratio_vs_etcd)x)" end), \(f(.gateway_vs_keel.rps_ratio))x native keel; p50 \(f(.gateway.p50_ms)) ms vs keel \(f(.keel.p50_ms)) ms: added p50 \(f(.gateway_vs_keel.added_p50_ms)) ms (p99 \(f(.gateway_vs_keel.added_p99_ms))); goals \(if .goals.met then "met" else "MISSED" end); gateway process \(f(.gateway.cpu_cores.gateway)) cores"' "$out.json"
  fi
  if jq -e '[.workloads[].name | startswith("watch")] | any' "$out.json" >/dev/null; then
    echo "watch rows: r/s = watch events delivered per second over all watchers (w); p50/p99 = put -> event latency"
    jq -r 'def f($x): if $x == null then "-" else "\($x)" end;
      .workloads[] | select(.name | startswith("watch"))
      | "  \(.label): largest member peak RSS keel \(f(.keel.member_peak_rss_mb)) MB, etcd \(f(.etcd.member_peak_rss_mb)) MB"' "$out.json"
    jq -r '.workloads[] | select(.name | startswith("watch")) | .label as $l | . as $w | ("keel", "etcd") as $s
      | ($w[$s] // {runs: []}).runs[] | select(.watch.complete | not)
      | "  \($l): \($s) round \(.round): only \(.watch.events) of \(.watch.events_expected) events arrived within 30 s of the last put"' "$out.json"
  fi
  if jq -e '[.workloads[].name | startswith("lease")] | any' "$out.json" >/dev/null; then
    echo "lease-keepalive rows: r/s = keep-alives per second (10,000 leases round-robin), p50/p99 = keep-alive latency"
    echo "lease-churn: p50/p99 = expiry lag = DELETE event - (grant acknowledged + TTL), lower is better (ratio <1: keel expires"
    echo "  sooner); r/s = expiries per second from the first due time to the last DELETE (ratio >1: keel clears them faster)"
    jq -r 'def f($x): if $x == null then "-" else "\($x)" end;
      .workloads[] | select(.name == "lease-churn") | . as $w | ("keel", "etcd") as $s | $w[$s]
      | if . == null then "  \($s): no run completed" else
        "  \($s): p50 lag \(f(.p50_ms)) ms, p99 lag \(f(.p99_ms)) ms, max lag \(f(.lease.max_lag_ms)) ms, \(f(.lease.expired)) of \(f(.lease.attached)) expired\(if .lease.complete == false then " (timed out)" else "" end); max write stall \(f(.lease.stall_max_gap_ms)) ms" end' "$out.json"
  fi
  echo "cores busy (medians): members = the 3 servers (busiest one), driver = load generator, machine = all"
  printf '%-32s | %-36s | %-30s\n' "" "keel members/driver/machine" "etcd members/driver/machine"
  jq -r 'def c($x): if $x == null then "-" else "\($x.servers) (\($x.busiest_member))\(if $x.gateway == null then "" else " + gw \($x.gateway)" end) / \($x.driver) / \($x.machine)" end;
    .workloads[] | [.label, c((.gateway // .keel).cpu_cores), c(.etcd.cpu_cores)] | @tsv' "$out.json" |
    while IFS=$'\t' read -r l k e; do printf '%-32s | %-36s | %-30s\n' "$l" "$k" "$e"; done
} | tee "$out.txt"

# The chart.
jq -r '.workloads[] | (.gateway // .keel) as $k | [.label, $k.rps, .etcd.rps, $k.p50_ms, .etcd.p50_ms,
  $k.p99_ms, .etcd.p99_ms] | map(. // "-") | @tsv' "$out.json" >"$work/plot.dat"
if gnuplot -e "datafile='$work/plot.dat'; outfile='$out.png'; subtitle='keel $git_rev vs etcd $etcd_version, $ncpu cpus, medians of $rounds round(s) of ${duration}s'" \
  bench/plot.gp 2>"$work/gnuplot.err"; then
  log "wrote $out.json, $out.txt and $out.png"
else
  log "gnuplot failed: $(cat "$work/gnuplot.err")"
  failures=$((failures + 1))
fi
if [ $failures -gt 0 ]; then
  log "$failures run(s) or step(s) failed; see above"
  exit 1
fi
