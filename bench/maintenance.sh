#!/usr/bin/env bash
# Maintenance on a big store, keel and etcd side by side on this machine (issue 14's figures):
# each system in turn gets a fresh 3-member cluster loaded with --keys keys of 256 B (default
# 5.5M: 1.4 GB of values, stores of 2.1-2.2 GB on either system, above the issue's 1.5 GB), then
#   snapshot  save from the leader (keelctl / etcdctl snapshot save), its time and size, and the
#             slowest and p99 put of a 1-client writer running meanwhile (for 15 s, the save starting
#             2 s in: a longer save is only partly covered);
#   range     a keys-only range over the first 250,000 keys (get "" --from-key --keys-only
#             --limit 250000), its time and the leader's peak RSS while serving it;
#   defrag    keelctl / etcdctl defrag of the leader, its time and the writer's slowest and p99 put
#             meanwhile;
#   restart   every member stopped (SIGTERM) and started again: the time to the first
#             linearizable read, and the members' anonymous RSS afterwards.
#
#   bench/maintenance.sh [--keys N] [--out PREFIX] [--only keel|etcd]
#
# Results: PREFIX.txt and PREFIX.json (default bench/results/maintenance-latest). keel members on
# 127.0.i.1:22379/22380, etcd on 127.0.i.1:12379/12380 (fsync on, heartbeat 100, election 1000);
# the load comes from build/release/bench/keel-bench and bench/etcd-driver. Everything it starts
# it stops by PID, also when interrupted, and it removes its data (several GB) on the way out.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=bench/lib.sh
. bench/lib.sh
keys=5500000
out=bench/results/maintenance-latest
only=
while [ $# -gt 0 ]; do
  case "$1" in
  --keys) keys=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --only) only=$2; shift 2 ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
log() { printf '%s maintenance: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# The revision measured, taken now: the report is written half an hour later.
git_rev=$(git describe --always --dirty 2>/dev/null || echo unknown)

B=$root/build/release/bench/keel-bench
KEELD=$root/build/release/server/keeld
KCTL=$root/build/release/client/keelctl
[ -x "$B" ] && [ -x "$KEELD" ] && [ -x "$KCTL" ] || { log "build build/release first (scripts/quickstart.sh)"; exit 1; }
driver=
if [ "$only" != keel ]; then
  driver=$(etcd_driver "$root" "$git_rev") || { log "building bench/etcd-driver failed"; exit 1; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-maint.XXXXXX")
pids=()
writer=
stop_all() {
  stop_pids 30 "${pids[@]}"
  pids=()
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$writer" ] && kill -TERM "$writer" 2>/dev/null || true
  stop_all
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ---- the two systems behind the same verbs
keel_eps=127.0.1.1:22379,127.0.2.1:22379,127.0.3.1:22379
etcd_eps=http://127.0.1.1:12379,http://127.0.2.1:12379,http://127.0.3.1:12379
start() { # SYS: start (or restart) the 3 members on their data dirs
  local i
  if [ "$1" = keel ]; then
    local initial=m1=127.0.1.1:22380@z1,m2=127.0.2.1:22380@z2,m3=127.0.3.1:22380@z3
    for i in 1 2 3; do
      "$KEELD" --name "m$i" --data-dir "$work/keel/m$i" --listen-client "127.0.$i.1:22379" \
        --listen-peer "127.0.$i.1:22380" --initial-cluster "$initial" --log-level warn \
        >>"$work/keel-m$i.log" 2>&1 &
      pids+=($!)
    done
  else
    local initial=m1=http://127.0.1.1:12380,m2=http://127.0.2.1:12380,m3=http://127.0.3.1:12380
    for i in 1 2 3; do
      etcd --name "m$i" --data-dir "$work/etcd/m$i" \
        --listen-client-urls "http://127.0.$i.1:12379" --advertise-client-urls "http://127.0.$i.1:12379" \
        --listen-peer-urls "http://127.0.$i.1:12380" --initial-advertise-peer-urls "http://127.0.$i.1:12380" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token keel-maint \
        --heartbeat-interval 100 --election-timeout 1000 --quota-backend-bytes 8589934592 \
        --logger zap --log-level warn >>"$work/etcd-m$i.log" 2>&1 &
      pids+=($!)
    done
  fi
}
ctl() { # SYS ARGS...
  local sys=$1
  shift
  if [ "$sys" = keel ]; then "$KCTL" --endpoints "$keel_eps" "$@"; else ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" "$@"; fi
}
lin_read() { # SYS: one linearizable read, short timeouts
  if [ "$1" = keel ]; then
    "$KCTL" --endpoints "$keel_eps" --timeout 1s --dial-timeout 200ms get probe >/dev/null 2>&1
  else
    ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" --command-timeout 1s --dial-timeout 200ms get probe >/dev/null 2>&1
  fi
}
leader() { # SYS -> the leader's endpoint
  ctl "$1" endpoint status -w json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    s = e["Status"]
    if s["leader"] == s["header"]["member_id"]:
        print(e["Endpoint"]); break'
}
leader_pid() { # SYS ENDPOINT -> the pid of that member
  local i
  for i in 1 2 3; do case "$2" in *127.0.$i.1:*) echo "${pids[$((i - 1))]}" ;; esac; done
}
bench() { # SYS ARGS...
  if [ "$1" = keel ]; then shift; "$B" --endpoints "$keel_eps" "$@"; else shift; "$driver" --endpoints "$etcd_eps" "$@"; fi
}
writer_start() { # SYS: a 1-client writer in the background for 15 s, the operation starting 2 s in
  bench "$1" put --clients 1 --duration 15 --key-size 8 --val-size 256 --key-space-size 1000 \
    --json >"$work/writer.json" 2>/dev/null &
  writer=$!
  sleep 2
}
writer_wait() { # wait (in this shell: a subshell cannot) for the writer's 15 s to end
  wait "$writer" 2>/dev/null || true
  writer=
}
writer_figures() { # -> "SLOWEST P99" of the writer's puts in ms
  python3 -c 'import json,sys
s = json.load(open(sys.argv[1]))["summary"]
print(round(s["slowest_ms"], 1), round(s["p99_ms"], 2))' "$work/writer.json" 2>/dev/null ||
    { log "the writer's figures are missing: $(head -c 300 "$work/writer.json" 2>/dev/null)"; echo "n/a n/a"; }
}

results=$work/results.jsonl
: >"$results"
record() { printf '%s\n' "$1" >>"$results"; }

run_system() {
  local sys=$1 t0 t1 ep pid rc
  mkdir -p "$work/$sys"
  log "$sys: starting, loading $keys keys of 256 B"
  start "$sys"
  for _ in $(seq 1 300); do lin_read "$sys" && break; sleep 0.2; done
  bench "$sys" put --sequential-keys --total "$keys" --key-space-size "$keys" --conns 8 --clients 128 \
    --key-size 8 --val-size 256 --json >"$work/load.json" 2>"$work/load.err" ||
    { log "$sys: load failed: $(tail -c 300 "$work/load.err")"; return 1; }
  local rps size
  rps=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["summary"]["rps"]))' "$work/load.json")
  if [ "$sys" = keel ]; then size=$(stat -c %s "$work/keel/m1/state/data.mdb"); else size=$(stat -c %s "$work/etcd/m1/member/snap/db"); fi
  log "$sys: loaded at $rps puts/s; store file $size bytes"
  record "{\"system\":\"$sys\",\"step\":\"load\",\"rps\":$rps,\"store_bytes\":$size}"
  ep=$(leader "$sys")

  # snapshot save, with a writer running
  writer_start "$sys"
  t0=$(now)
  rc=0
  if [ "$sys" = keel ]; then
    "$KCTL" --endpoints "${ep#http://}" --timeout 120s snapshot save "$work/snap" >/dev/null 2>"$work/snap.err" || rc=$?
  else
    ETCDCTL_API=3 etcdctl --endpoints "$ep" snapshot save "$work/snap" >/dev/null 2>"$work/snap.err" || rc=$?
  fi
  t1=$(now)
  local slow p99 snapsize
  writer_wait
  read -r slow p99 < <(writer_figures)
  snapsize=$(stat -c %s "$work/snap" 2>/dev/null || echo 0)
  log "$sys: snapshot save rc $rc in $(secs "$t0" "$t1") s, $snapsize bytes; writer's puts: slowest $slow ms, p99 $p99 ms"
  record "{\"system\":\"$sys\",\"step\":\"snapshot\",\"rc\":$rc,\"s\":$(secs "$t0" "$t1"),\"bytes\":$snapsize,\"writer_slowest_ms\":\"$slow\",\"writer_p99_ms\":\"$p99\"}"
  rm -f "$work/snap"

  # keys-only range over the first 250,000 keys, and the leader's peak RSS meanwhile
  pid=$(leader_pid "$sys" "$ep")
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
  t0=$(now)
  rc=0
  local bytes
  if [ "$sys" = keel ]; then
    bytes=$("$KCTL" --endpoints "${ep#http://}" --timeout 60s get "" --from-key --keys-only --limit 250000 2>"$work/range.err" | wc -c) || rc=$?
  else
    bytes=$(ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 60s get "" --from-key --keys-only --limit 250000 2>"$work/range.err" | wc -c) || rc=$?
  fi
  t1=$(now)
  [ -s "$work/range.err" ] && rc=1
  local hwm
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  log "$sys: keys-only range of 250000 keys: rc $rc in $(secs "$t0" "$t1") s ($bytes bytes out; $(head -c 200 "$work/range.err")); leader peak RSS $((hwm / 1024)) MiB"
  record "{\"system\":\"$sys\",\"step\":\"range\",\"rc\":$rc,\"s\":$(secs "$t0" "$t1"),\"bytes\":$bytes,\"leader_peak_rss_kb\":$hwm}"

  # defrag of the leader, with a writer running
  writer_start "$sys"
  t0=$(now)
  rc=0
  if [ "$sys" = keel ]; then
    "$KCTL" --endpoints "${ep#http://}" --timeout 600s defrag >/dev/null 2>"$work/defrag.err" || rc=$?
  else
    ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout 600s defrag >/dev/null 2>"$work/defrag.err" || rc=$?
  fi
  t1=$(now)
  writer_wait
  read -r slow p99 < <(writer_figures)
  log "$sys: defrag rc $rc in $(secs "$t0" "$t1") s; writer's puts: slowest $slow ms, p99 $p99 ms"
  record "{\"system\":\"$sys\",\"step\":\"defrag\",\"rc\":$rc,\"s\":$(secs "$t0" "$t1"),\"writer_slowest_ms\":\"$slow\",\"writer_p99_ms\":\"$p99\"}"

  # restart to the first linearizable read
  stop_all
  t0=$(now)
  start "$sys"
  for _ in $(seq 1 600); do lin_read "$sys" && break; sleep 0.05; done
  t1=$(now)
  sleep 1
  local rss=0 p v
  for p in "${pids[@]}"; do
    v=$(awk '/RssAnon/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    [ "$v" -gt "$rss" ] && rss=$v
  done
  log "$sys: restart to the first linearizable read $(secs "$t0" "$t1") s; largest member RssAnon $((rss / 1024)) MiB"
  record "{\"system\":\"$sys\",\"step\":\"restart\",\"s\":$(secs "$t0" "$t1"),\"max_rss_anon_kb\":$rss}"
  stop_all
  rm -rf "${work:?}/$sys"
}

for sys in keel etcd; do
  [ -n "$only" ] && [ "$only" != "$sys" ] && continue
  run_system "$sys"
done

mkdir -p "$(dirname "$out")"
python3 - "$results" "$out" "$keys" "$git_rev" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out, keys, rev = sys.argv[2], int(sys.argv[3]), sys.argv[4]
json.dump({"keel": rev, "keys": keys, "results": rows}, open(out + ".json", "w"), indent=1)
by = {(r["system"], r["step"]): r for r in rows}
def f(sys_, step, key, fmt="%s"):
    r = by.get((sys_, step))
    if r is None: return "-"
    if r.get("rc", 0) not in (0, None): return "failed" if r.get("rc") != -1 else "n/a"
    v = r.get(key)
    return fmt % v if v is not None else "-"
lines = ["keel %s vs etcd, %d keys x 256 B, 3 members on loopback, this machine" % (rev, keys), ""]
lines.append("%-44s %14s %14s" % ("", "keel", "etcd"))
for label, step, key, fmt in [
    ("load, puts/s (128 clients)", "load", "rps", "%d"),
    ("store file, bytes", "load", "store_bytes", "%d"),
    ("snapshot save, s", "snapshot", "s", "%.2f"),
    ("snapshot file, bytes", "snapshot", "bytes", "%d"),
    ("  writer's slowest put meanwhile, ms", "snapshot", "writer_slowest_ms", "%s"),
    ("  writer's p99 put meanwhile, ms", "snapshot", "writer_p99_ms", "%s"),
    ("keys-only range of 250k keys, s", "range", "s", "%.2f"),
    ("  leader peak RSS meanwhile, KiB", "range", "leader_peak_rss_kb", "%d"),
    ("defrag, s", "defrag", "s", "%.2f"),
    ("  writer's slowest put meanwhile, ms", "defrag", "writer_slowest_ms", "%s"),
    ("  writer's p99 put meanwhile, ms", "defrag", "writer_p99_ms", "%s"),
    ("restart to first linearizable read, s", "restart", "s", "%.2f"),
    ("  largest member RssAnon after, KiB", "restart", "max_rss_anon_kb", "%d"),
]:
    lines.append("%-44s %14s %14s" % (label, f("keel", step, key, fmt), f("etcd", step, key, fmt)))
open(out + ".txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
