#!/usr/bin/env bash
# Restart cost of a loaded member: load a fresh 3-member cluster, then restart one follower and
# then the whole cluster, timing each from process start to the first linearizable read, and
# report the raft log on disk and the member's memory.
#
#   bench/restart.sh [--keys N] [--val-size B] [--clients C] [--load-seconds S] [--block Z]
#                    [--dir DIR] [--keeld PATH] [--keep] [--reuse] [-- extra keeld flags...]
#
# Members live on 127.0.Z.1, 127.0.Z+1.1, 127.0.Z+2.1 (default Z=41; client port 2379, peer
# 2380), data under DIR (default /tmp/keel-restart). The load is keel-bench's put of N distinct
# sequential 8-byte keys with B-byte values (default 5,000,000 x 256) at C clients (default 128),
# stopped after S seconds if given. --keep leaves DIR in place; --reuse measures the cluster a
# --keep run left in DIR again, without loading. Only the processes this script starts are
# signalled (by PID).
#
# Timings (each polled every 10 ms with keelctl, from just before the keeld process starts):
#   follower: SIGTERM one follower, start it again; "lin" is the first linearizable read through
#     its endpoint (a follower answers it with the leader's address and keelctl asks the leader:
#     it needs the member up and in touch with a leader); "caught up" is the first serializable
#     read on that member itself that sees the last key written before the restart.
#   cluster: SIGTERM all three, start all three; the first linearizable read through any member.
# RssAnon and VmHWM come from /proc/PID/status once the member has caught up, and 5 s later.
set -euo pipefail
cd "$(dirname "$0")/.."

keys=5000000 val=256 clients=128 load_s=0 block=41 dir=/tmp/keel-restart keep=0 reuse=0
keeld=build/release/server/keeld
while [ $# -gt 0 ]; do
  case "$1" in
  --keys) keys=$2; shift 2 ;;
  --val-size) val=$2; shift 2 ;;
  --clients) clients=$2; shift 2 ;;
  --load-seconds) load_s=$2; shift 2 ;;
  --block) block=$2; shift 2 ;;
  --dir) dir=$2; shift 2 ;;
  --keeld) keeld=$2; shift 2 ;;
  --keep) keep=1; shift ;;
  --reuse) reuse=1; keep=1; shift ;;
  --) shift; break ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
extra=("$@")
bin=$(dirname "$keeld")/..
keelctl=$bin/client/keelctl
bench=$bin/bench/keel-bench
[ -x "$keelctl" ] || keelctl=build/release/client/keelctl
[ -x "$bench" ] || bench=build/release/bench/keel-bench
for b in "$keeld" "$keelctl" "$bench"; do [ -x "$b" ] || { echo "restart: no $b (build first)" >&2; exit 1; }; done

host() { echo "127.0.$((block + $1 - 1)).1"; }
initial=""
for i in 1 2 3; do initial+="${initial:+,}m$i=$(host "$i"):2380@z$i"; done
eps="$(host 1):2379,$(host 2):2379,$(host 3):2379"
declare -A pid

now_ms() { echo $(($(date +%s%N) / 1000000)); }

start() { # member
  local i=$1
  "$keeld" --name "m$i" --data-dir "$dir/m$i" --listen-client "$(host "$i"):2379" \
    --listen-peer "$(host "$i"):2380" --initial-cluster "$initial" "${extra[@]}" \
    >>"$dir/m$i.log" 2>&1 &
  pid[$i]=$!
}

stop() { # member: SIGTERM, wait (bounded) for it to exit
  local i=$1 p=${pid[$1]:-}
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 600); do [ -d "/proc/$p" ] || break; sleep 0.1; done
  if [ -d "/proc/$p" ]; then echo "restart: m$i (pid $p) did not stop; killing it" >&2; kill -KILL "$p"; fi
  wait "$p" 2>/dev/null || true
  pid[$i]=""
}

cleanup() { for i in 1 2 3; do stop "$i"; done; [ $keep -eq 1 ] || rm -rf "$dir"; }
trap cleanup EXIT

# Poll until cmd succeeds (10 ms apart, at most 60 s); print the ms since t0.
poll() { # t0 cmd...
  local t0=$1; shift
  for _ in $(seq 1 6000); do
    if "$@" >/dev/null 2>&1; then echo $(($(now_ms) - t0)); return 0; fi
    sleep 0.01
  done
  echo "timeout"
  return 1
}

lin_get() { "$keelctl" --endpoints "$1" --timeout 1s --dial-timeout 200ms get --consistency l restart/marker; }
# The marker's value on that member alone (serializable), compared with want.
caught_up() { # endpoint want
  [ "$("$keelctl" --endpoints "$1" --timeout 1s --dial-timeout 200ms get --consistency s --print-value-only restart/marker 2>/dev/null)" = "$2" ]
}

status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
mem() { # member label
  local p=${pid[$1]}
  echo "  m$1 $2: RssAnon $(( $(status_kb "$p" RssAnon) / 1024 )) MiB, RssFile $(( $(status_kb "$p" RssFile) / 1024 )) MiB, VmHWM $(( $(status_kb "$p" VmHWM) / 1024 )) MiB"
}
sizes() { # member
  echo "  m$1: raft dir $(du -sb "$dir/m$1/raft" | cut -f1) bytes ($(ls "$dir/m$1/raft" | wc -l) files), state dir $(du -sb "$dir/m$1/state" | cut -f1) bytes"
}

[ $reuse -eq 1 ] || rm -rf "$dir"
mkdir -p "$dir"
echo "keeld $keeld (sha256 $(sha256sum "$keeld" | cut -c1-12)), flags: ${extra[*]:-(none)}"
for i in 1 2 3; do start "$i"; done
t0=$(now_ms)
echo "cluster up: first linearizable read after $(poll "$t0" lin_get "$eps") ms"

load=(--total "$keys")
[ "$load_s" -gt 0 ] && load=(--duration "$load_s")
if [ $reuse -eq 0 ]; then
  echo "load: put $keys keys x $val B, $clients clients (${load[*]})"
  "$bench" --endpoints "$eps" put --conns $((clients / 8 > 0 ? clients / 8 : 1)) --clients "$clients" \
    "${load[@]}" --key-size 8 --val-size "$val" --key-space-size "$keys" --sequential-keys \
    --timeout-ms 30000 | grep -E "Requests/sec|Total:|Summary|errors|Slowest|Average" || true
fi
marker="m$(now_ms)"
"$keelctl" --endpoints "$eps" put restart/marker "$marker" >/dev/null
for i in 1 2 3; do poll "$(now_ms)" caught_up "$(host "$i"):2379" "$marker" >/dev/null; done
sleep 2 # let the writers commit and the members settle
leader=$("$keelctl" --endpoints "$eps" endpoint status -w json 2>/dev/null | jq -r \
  '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' | head -1)
f=1
for i in 1 2 3; do [ "$(host "$i"):2379" != "$leader" ] && { f=$i; break; }; done
echo "after the load (leader $leader, measured follower m$f):"
for i in 1 2 3; do sizes "$i"; done
for i in 1 2 3; do mem "$i" "loaded"; done

echo "follower restart (m$f):"
stop "$f"
t0=$(now_ms)
start "$f"
echo "  first linearizable read through m$f: $(poll "$t0" lin_get "$(host "$f"):2379") ms"
echo "  m$f caught up (serializable read of the last key on m$f): $(poll "$t0" caught_up "$(host "$f"):2379" "$marker") ms"
mem "$f" "caught up"
sleep 5
mem "$f" "5 s later"
sizes "$f"

echo "whole-cluster restart:"
for i in 1 2 3; do stop "$i"; done
t0=$(now_ms)
for i in 1 2 3; do start "$i"; done
echo "  first linearizable read through any member: $(poll "$t0" lin_get "$eps") ms"
for i in 1 2 3; do echo "  m$i caught up: $(poll "$t0" caught_up "$(host "$i"):2379" "$marker") ms"; done
for i in 1 2 3; do mem "$i" "caught up"; done
sleep 5
for i in 1 2 3; do mem "$i" "5 s later"; done
