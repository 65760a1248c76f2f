#!/usr/bin/env bash
# keel against itself: two revisions side by side on this machine, for "does this change cost
# throughput?". Each revision is built (release, no sanitizers) in its own worktree under
# build/ab/; then, for every round, each revision in turn gets a fresh 3-member cluster
# (scripts/cluster.sh, 127.0.i.1), the 100,000-key preload of compare-etcd.sh, and the same
# workloads (compare-etcd.sh's; the watch row's req/s is events delivered per second). Rounds
# interleave the revisions (A B, B A, A B, ...) so a drift of the machine hits both. Prints the
# median req/s and p50 of each workload per revision and the ratio B/A.
#
#   bench/ab.sh REV_A REV_B [--rounds 3] [--duration 10] [--only put-c1,range-l-c64]
#
# Needs jq. Stops only the clusters it started (scripts/cluster.sh stop, by PID).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
rev_a=$1 rev_b=$2
shift 2
rounds=3 duration=10 only=
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) rounds=$2; shift 2 ;;
  --duration) duration=$2; shift 2 ;;
  --only) only=$2; shift 2 ;;
  *) echo "ab: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v jq >/dev/null || { echo "ab: needs jq (apt-get install jq)" >&2; exit 2; }

common=(--key-size 8 --val-size 256 --key-space-size 100000 --duration "$duration")
workloads=(
  "put-c1|put --conns 1 --clients 1"
  "put-c64|put --conns 8 --clients 64"
  "put-c256|put --conns 16 --clients 256"
  "range-l-c64|range --consistency l --conns 8 --clients 64"
  "range-s-c64|range --consistency s --conns 8 --clients 64"
  "watch-w1000|watch --watchers 1000 --conns 4 --clients 16"
)
selected() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

work=$root/build/ab
mkdir -p "$work"
build_rev() { # rev -> its build dir on stdout
  local sha dir
  sha=$(git rev-parse --short=12 "$1^{commit}")
  dir=$work/$sha
  if [ ! -x "$dir/build/server/keeld" ]; then
    rm -rf "$dir"
    git worktree add -f --detach "$dir" "$sha" >/dev/null 2>&1
    cmake -S "$dir" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$dir/build" -j"$(nproc)" --target keeld keel-bench >/dev/null
  fi
  echo "$dir"
}
dir_a=$(build_rev "$rev_a")
dir_b=$(build_rev "$rev_b")
runs=$work/runs.jsonl
: >"$runs"
eps=127.0.1.1:2379,127.0.2.1:2379,127.0.3.1:2379

run_rev() { # round label dir
  local round=$1 label=$2 dir=$3 name flags
  export KEELD=$dir/build/server/keeld KEEL_CLUSTER_DIR=$work/cluster
  rm -rf "$KEEL_CLUSTER_DIR"
  scripts/cluster.sh start >/dev/null
  trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
  local bench=$dir/build/bench/keel-bench
  "$bench" --endpoints "$eps" put --sequential-keys --total 100000 --conns 8 --clients 64 \
    --key-size 8 --val-size 256 --key-space-size 100000 --json >/dev/null
  for w in "${workloads[@]}"; do
    IFS='|' read -r name flags <<<"$w"
    selected "$name" || continue
    # shellcheck disable=SC2086
    "$bench" --endpoints "$eps" $flags "${common[@]}" --json |
      jq -c --arg r "$round" --arg l "$label" --arg w "$name" \
        '{round: ($r | tonumber), rev: $l, workload: $w, rps: (.watch.events_per_sec // .summary.rps), p50: .summary.p50_ms}' \
        >>"$runs" || echo "ab: $label $name failed in round $round" >&2
  done
  scripts/cluster.sh stop >/dev/null
  trap - EXIT
}

for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then order="a b"; else order="b a"; fi
  for x in $order; do
    if [ "$x" = a ]; then run_rev "$r" A "$dir_a"; else run_rev "$r" B "$dir_b"; fi
    echo "ab: round $r, $x done" >&2
  done
done

echo "A = $(git rev-parse --short "$rev_a"), B = $(git rev-parse --short "$rev_b"); medians of $rounds rounds of ${duration}s"
jq -rs '
  def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  group_by(.workload)[] | . as $g
  | ([$g[] | select(.rev == "A") | .rps] | median) as $ra
  | ([$g[] | select(.rev == "B") | .rps] | median) as $rb
  | ([$g[] | select(.rev == "A") | .p50] | median) as $pa
  | ([$g[] | select(.rev == "B") | .p50] | median) as $pb
  | "\($g[0].workload)\tA \($ra | round) req/s p50 \($pa) ms\tB \($rb | round) req/s p50 \($pb) ms\tB/A \(($rb / $ra * 1000 | round) / 1000)"
' "$runs" | column -t -s $'\t'
