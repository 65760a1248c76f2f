#!/usr/bin/env bash
# Failover, keel and etcd side by side on this machine (issue 15's figures). Each round gives each
# system a fresh 3-member cluster (heartbeat 100 ms, election timeout 1000 ms: both systems'
# defaults) and a 64-client / 8-connection put load for 14 s that notes every answer with its
# wall-clock time (keel-bench / etcd-driver --timeline), and inside it:
#   kill      at 2 s, kill -9 of the leader: the time from the kill to the first acknowledged put
#             sent after it, and until 90% of the clients have had one acknowledged again; the
#             member is started again at 6 s;
#   move      at 8.5 s, a planned move of leadership to a follower (keelctl / etcdctl
#             move-leader): the longest time without any acknowledged put in the 200 ms from the
#             command (the command's own start-up included), beside what a 200 ms window without
#             a fault shows (the median of those before the kill);
#   partition at 10 s (keel only), a follower's zone cut off with scripts/zones.sh for 2.5 s, then
#             healed: the longest time without an acknowledged put in the 3 s after the heal (a
#             rejoining member that deposes the leader stalls everyone again: pre-vote prevents
#             it), and the time from the heal until that member serves a key written at the heal
#             (its catch-up). etcd is left out: it does not bind its source address, so zones.sh
#             cannot cut one etcd member off from the others (scripts/zones.sh --help).
#
#   bench/failover.sh [--rounds N] [--rate R] [--out PREFIX] [--only keel|etcd] [--keep]
#
# --rate R paces the load at R puts/s over all clients (default: as fast as they go, which on a
# machine where the three members share the cores leaves a member that catches up little CPU).
#
# Medians over the rounds; --keep leaves the members' logs and the timelines in place. Results:
# PREFIX.txt and PREFIX.json (default
# bench/results/failover-latest). keel on 127.0.i.1:22379/22380, etcd on 127.0.i.1:12379/12380.
# Everything it starts it stops by PID, also when interrupted; a partition it made is healed on
# the way out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh
rounds=3
rate=0
keep=0
out=bench/results/failover-latest
only=
while [ $# -gt 0 ]; do
  case "$1" in
  --rounds) rounds=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --only) only=$2; shift 2 ;;
  --keep) keep=1; shift ;;
  --rate) rate=$2; shift 2 ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]?$ ]] || { echo "failover: --rounds 1..99" >&2; exit 2; }
[[ "$rate" =~ ^[0-9]+$ ]] || { echo "failover: --rate N (puts/s)" >&2; exit 2; }
pace=()
[ "$rate" -gt 0 ] && pace=(--rate "$rate")
log() { printf '%s failover: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
git_rev=$(git describe --always --dirty 2>/dev/null || echo unknown)

B=$root/build/release/bench/keel-bench
KEELD=$root/build/release/server/keeld
KCTL=$root/build/release/client/keelctl
[ -x "$B" ] && [ -x "$KEELD" ] && [ -x "$KCTL" ] || { log "build build/release first (scripts/quickstart.sh)"; exit 1; }
driver=
if [ "$only" != keel ]; then
  command -v etcd >/dev/null && command -v etcdctl >/dev/null || { log "etcd is not installed (Debian etcd-server, etcd-client); --only keel runs without it"; exit 1; }
  driver=$(etcd_driver "$root" "$git_rev") || { log "building bench/etcd-driver failed"; exit 1; }
fi
partition_ok=0
if [ "$only" != etcd ] && [ "$(id -u)" -eq 0 ] && scripts/zones.sh status >/dev/null 2>&1; then
  log "scripts/zones.sh is active already (not ours): the partition step is skipped"
elif [ "$only" != etcd ] && [ "$(id -u)" -eq 0 ] && command -v iptables >/dev/null; then
  partition_ok=1
else
  [ "$only" != etcd ] && log "the partition step needs root and iptables (scripts/zones.sh): skipped"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-failover.XXXXXX")
pids=()
load=
partitioned=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ $partitioned -eq 1 ] && scripts/zones.sh heal >/dev/null 2>&1 || true
  [ -n "$load" ] && kill -TERM "$load" 2>/dev/null || true
  stop_pids 10 "${pids[@]}"
  if [ $keep -eq 1 ]; then log "kept $work"; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# Times are bash's $EPOCHREALTIME, wall-clock microseconds without a fork: a date process took ms
# on a busy machine, and a fault timed ms early lets puts sent before it pass for puts after it.

keel_eps=127.0.1.1:22379,127.0.2.1:22379,127.0.3.1:22379
etcd_eps=http://127.0.1.1:12379,http://127.0.2.1:12379,http://127.0.3.1:12379
start_member() { # SYS I: start member I on its data dir; its pid in pids[I-1]
  local i=$2
  if [ "$1" = keel ]; then
    "$KEELD" --name "m$i" --data-dir "$work/keel/m$i" --listen-client "127.0.$i.1:22379" \
      --listen-peer "127.0.$i.1:22380" --log-level info \
      --initial-cluster m1=127.0.1.1:22380@z1,m2=127.0.2.1:22380@z2,m3=127.0.3.1:22380@z3 \
      >>"$work/keel-m$i.log" 2>&1 &
  else
    etcd --name "m$i" --data-dir "$work/etcd/m$i" \
      --listen-client-urls "http://127.0.$i.1:12379" --advertise-client-urls "http://127.0.$i.1:12379" \
      --listen-peer-urls "http://127.0.$i.1:12380" --initial-advertise-peer-urls "http://127.0.$i.1:12380" \
      --initial-cluster m1=http://127.0.1.1:12380,m2=http://127.0.2.1:12380,m3=http://127.0.3.1:12380 \
      --initial-cluster-state new --initial-cluster-token keel-failover \
      --heartbeat-interval 100 --election-timeout 1000 --logger zap --log-level warn \
      >>"$work/etcd-m$i.log" 2>&1 &
  fi
  pids[$((i - 1))]=$!
}
ctl() { # SYS ARGS...
  local sys=$1
  shift
  if [ "$sys" = keel ]; then "$KCTL" --endpoints "$keel_eps" "$@"; else ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" "$@"; fi
}
healthy() { # SYS: a linearizable read answers (at most 20 s)
  local i
  for i in $(seq 1 100); do
    if [ "$1" = keel ]; then
      "$KCTL" --endpoints "$keel_eps" --timeout 1s --dial-timeout 200ms get probe >/dev/null 2>&1 && return 0
    else
      ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" --command-timeout 1s --dial-timeout 200ms get probe >/dev/null 2>&1 && return 0
    fi
    sleep 0.2
  done
  return 1
}
# SYS -> "INDEX ID_HEX" of the leader and "INDEX ID_HEX" of one follower, from endpoint status.
roles() {
  ctl "$1" endpoint status -w json | python3 -c '
import json, sys
lead = fol = None
for e in json.load(sys.stdin):
    s = e["Status"]
    i = int(e["Endpoint"].split("127.0.")[1].split(".")[0])
    me = s["header"]["member_id"]
    if s["leader"] == me: lead = (i, me)
    elif fol is None: fol = (i, me)
print(lead[0], format(lead[1], "x"), fol[0], format(fol[1], "x"))'
}

round_once() { # SYS ROUND -> a JSON line in $work/rounds.jsonl
  local sys=$1 r=$2 i
  rm -rf "${work:?}/$sys"
  : >"$work/$sys-m1.log" >"$work/$sys-m2.log" >"$work/$sys-m3.log"
  mkdir -p "$work/$sys"
  pids=()
  for i in 1 2 3; do start_member "$sys" "$i"; done
  healthy "$sys" || { log "$sys: the cluster never answered"; tail -3 "$work/$sys"-m*.log >&2; return 1; }
  local tl=$work/$sys-$r.timeline
  if [ "$sys" = keel ]; then
    "$B" --endpoints "$keel_eps" --conns 8 --clients 64 --duration 14 --key-space-size 100000 \
      --timeout-ms 10000 "${pace[@]}" --timeline "$tl" put >"$work/$sys-$r.load" 2>&1 &
  else
    "$driver" --endpoints "$etcd_eps" --target all --conns 8 --clients 64 --duration 14 \
      --key-space-size 100000 --timeout-ms 10000 "${pace[@]}" --timeline "$tl" put >"$work/$sys-$r.load" 2>&1 &
  fi
  load=$!
  local t_start t_kill t_move t_heal=0 caught=0 lead fol
  t_start=${EPOCHREALTIME/./}
  sleep 2
  read -r lead _ _ _ < <(roles "$sys")
  t_kill=${EPOCHREALTIME/./}
  kill -KILL "${pids[$((lead - 1))]}"
  wait "${pids[$((lead - 1))]}" 2>/dev/null || true
  sleep 4
  start_member "$sys" "$lead"
  sleep 2.5
  local fol_id
  read -r lead _ fol fol_id < <(roles "$sys")
  t_move=${EPOCHREALTIME/./}
  if [ "$sys" = keel ]; then
    "$KCTL" --endpoints "127.0.$lead.1:22379" move-leader "$fol_id" >/dev/null 2>&1 || log "keel: move-leader failed"
  else
    ETCDCTL_API=3 etcdctl --endpoints "http://127.0.$lead.1:12379" move-leader "$fol_id" >/dev/null 2>&1 || log "etcd: move-leader failed"
  fi
  if [ "$sys" = keel ] && [ $partition_ok -eq 1 ]; then
    sleep 1
    read -r lead _ fol _ < <(roles "$sys")
    partitioned=1
    scripts/zones.sh partition --zones 1-3 "$fol" >/dev/null
    sleep 2.5
    scripts/zones.sh heal >/dev/null
    partitioned=0
    t_heal=${EPOCHREALTIME/./}
    # A key written now is on the healed member once it has caught up.
    "$KCTL" --endpoints "$keel_eps" put "heal/$r" "$t_heal" >/dev/null
    for i in $(seq 1 500); do
      if [ "$("$KCTL" --endpoints "127.0.$fol.1:22379" --timeout 1s get "heal/$r" --consistency s --print-value-only 2>/dev/null)" = "$t_heal" ]; then
        caught=${EPOCHREALTIME/./}
        break
      fi
      sleep 0.01
    done
  fi
  wait "$load" 2>/dev/null || true
  load=
  stop_pids 10 "${pids[@]}"
  pids=()
  python3 - "$sys" "$r" "$tl" "$t_start" "$t_kill" "$t_move" "$t_heal" "$caught" >>"$work/rounds.jsonl" <<'EOF'
import json, sys
sysname, rnd, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t_start, t_kill, t_move, t_heal, caught = (int(x) for x in sys.argv[4:9])
ok = []  # (answered_us, client, sent_us) of acknowledged puts
fails = 0
with open(path) as f:
    for line in f:
        p = line.split()
        if len(p) != 4:
            continue
        if p[3] == "1":
            ok.append((int(p[2]), int(p[0]), int(p[1])))
        else:
            fails += 1
ok.sort()
clients = len({c for _, c, _ in ok})
# After a fault, what counts is a put sent after it: one the old leader had committed may still
# come back acknowledged just after the kill.
def first_after(t):
    return next((x for x, _, s in ok if s > t), None)
def back90(t):
    firsts = {}
    for x, c, s in ok:
        if s > t and c not in firsts:
            firsts[c] = x
    need = max(1, int(0.9 * clients + 0.999))
    v = sorted(firsts.values())
    return v[need - 1] - t if len(v) >= need else None
def max_gap(a, b):
    xs = [x for x, _, _ in ok if a <= x <= b]
    if len(xs) < 2:
        return None
    return max(y - x for x, y in zip(xs, xs[1:]))
def typical_gap(a, b, w):
    # the median over windows of w us of each window's longest gap: what a window of that length
    # shows without any fault
    g = [max_gap(x, x + w) for x in range(a, b - w, w)]
    g = sorted(x for x in g if x is not None)
    return g[len(g) // 2] if g else None
ms = lambda us: None if us is None else round(us / 1000.0, 1)
fa = first_after(t_kill)
res = {"system": sysname, "round": rnd, "acked": len(ok), "failed": fails, "clients": clients,
       "kill_first_put_ms": ms(fa - t_kill if fa else None),
       "kill_90pct_back_ms": ms(back90(t_kill)),
       "move_gap_ms": ms(max_gap(t_move, t_move + 200000)),
       "baseline_gap_ms": ms(typical_gap(t_start + 300000, t_kill - 100000, 200000))}
if t_heal:
    res["heal_gap_ms"] = ms(max_gap(t_heal, t_heal + 3000000))
    res["heal_catch_up_ms"] = ms(caught - t_heal) if caught else None
print(json.dumps(res))
EOF
  tail -1 "$work/rounds.jsonl" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  " + ", ".join(f"{k} {v}" for k, v in d.items()))' >&2
}

systems=(keel etcd)
[ -n "$only" ] && systems=("$only")
: >"$work/rounds.jsonl"
for r in $(seq 1 "$rounds"); do
  for sys in "${systems[@]}"; do
    log "round $r: $sys"
    round_once "$sys" "$r" || exit 1
  done
done

etcd_v=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p' || true)
mkdir -p "$(dirname "$out")"
python3 - "$work/rounds.jsonl" "$out" "$git_rev" "$rounds" "${etcd_v:-n/a}" "$rate" <<'EOF'
import json, statistics, sys
path, out, rev, rounds, etcd_v, rate = sys.argv[1:7]
runs = [json.loads(l) for l in open(path)]
keys = [("kill_first_put_ms", "kill -9 leader: first acknowledged put (ms)", "<= 1200"),
        ("kill_90pct_back_ms", "kill -9 leader: 90% of clients back (ms)", "<= 1500"),
        ("move_gap_ms", "planned move: longest gap in the 200 ms from it (ms)", "<= 20"),
        ("baseline_gap_ms", "no fault: a 200 ms window's longest gap, median (ms)", ""),
        ("heal_gap_ms", "partition healed: longest gap in the next 3 s (ms)", "no second stall"),
        ("heal_catch_up_ms", "partition healed: member caught up (ms)", "<= 1000")]
def med(sysname, k):
    v = [r[k] for r in runs if r["system"] == sysname and r.get(k) is not None]
    return (statistics.median(v), v) if v else (None, [])
summary = {"git_rev": rev, "rounds": int(rounds), "etcd_version": etcd_v, "rate": int(rate), "runs": runs,
           "medians": {}}
lines = [f"keel {rev} vs etcd {etcd_v}, {rounds} round(s), medians (each round's figures in brackets);",
         "3 members on loopback, heartbeat 100 ms, election timeout 1000 ms, 64 clients / 8 conns of puts"
         + (f" paced at {rate}/s" if rate != "0" else " as fast as they go"), "",
         f"{'':52} {'keel':>22} {'etcd':>22}   goal"]
for k, label, goal in keys:
    row = f"{label:52}"
    for s in ("keel", "etcd"):
        m, v = med(s, k)
        summary["medians"].setdefault(s, {})[k] = m
        cell = "n/a" if m is None else f"{m:g} [{' '.join(f'{x:g}' for x in v)}]"
        row += f" {cell:>22}"
    lines.append(row + f"   {goal}")
fails = {s: sum(r["failed"] for r in runs if r["system"] == s) for s in ("keel", "etcd")}
lines += ["", f"puts not acknowledged (outcome unknown when the leader died, errors, 10 s timeouts): keel {fails['keel']}, etcd {fails['etcd']}",
          "etcd partition: n/a (zones.sh cannot cut one etcd member off: etcd does not bind its source address)"]
open(out + ".txt", "w").write("\n".join(lines) + "\n")
json.dump(summary, open(out + ".json", "w"), indent=1)
print("\n".join(lines))
EOF
