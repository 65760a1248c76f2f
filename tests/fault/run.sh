#!/usr/bin/env bash
# Long runs of the fault scenarios (tests/fault/test_fault.c): every scenario in turn, each run
# with its own seed, until the time is up. Prints a table (scenario x runs x operations x faults x
# outcome) and one summary line; exits non-zero if any run failed. A failed run's output and its
# history (for `test_fault replay FILE`) are kept under the log directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
    cat <<'EOF'
usage: tests/fault/run.sh [--minutes N] [--seed S] [--scenario NAME] [--run-ms MS] [--build DIR]
  --minutes N     how long to keep starting runs (default 20); a run under way is finished
  --seed S        the first run's seed; run i uses S + i (default: from the clock)
  --scenario NAME only this scenario (repeatable; default: every one, see `test_fault list`)
  --run-ms MS     the workload's length in each run (default 20000)
  --build DIR     the build with test_fault (default build/asan; built if missing)
Zone scenarios need root; without it they are reported skipped, never passed.
EOF
}

minutes=20 seed=$(date +%s) run_ms=20000 build=build/asan
declare -a only=()
while (($#)); do
    case $1 in
    --minutes) minutes=${2:?--minutes needs a value}; shift 2 ;;
    --seed) seed=${2:?--seed needs a value}; shift 2 ;;
    --scenario) only+=("${2:?--scenario needs a value}"); shift 2 ;;
    --run-ms) run_ms=${2:?--run-ms needs a value}; shift 2 ;;
    --build) build=${2:?--build needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ $minutes =~ ^[0-9]+$ && $seed =~ ^[0-9]+$ && $run_ms =~ ^[0-9]+$ ]] ||
    { echo "run.sh: --minutes, --seed and --run-ms take whole numbers" >&2; exit 2; }

bin=$build/tests/test_fault
if [[ ! -x $bin ]]; then
    ./scripts/deps.sh
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON -DKEEL_WERROR=ON >/dev/null
    cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target test_fault keeld keel-netsim
fi
bin=$(realpath "$bin")
export KEEL_NETSIM=${KEEL_NETSIM:-$(realpath "$build/bench/keel-netsim" 2>/dev/null || true)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

mapfile -t all < <("$bin" list | cut -f1)
if ((${#only[@]})); then
    for s in "${only[@]}"; do
        printf '%s\n' "${all[@]}" | grep -qx "$s" || { echo "run.sh: unknown scenario $s" >&2; exit 2; }
    done
    all=("${only[@]}")
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/keel-fault-run.XXXXXX")
declare -A runs=() ops=() faults=() terms=() failed=() skipped=()
end=$(($(date +%s) + minutes * 60))
i=0 total_runs=0 total_ops=0 total_faults=0 total_failed=0 total_skipped=0
# Each run is bounded: the workload, the checks, and a generous margin for a slow machine.
limit=$((run_ms / 1000 + 240))
while (($(date +%s) < end)) || ((i == 0)); do
    s=${all[i % ${#all[@]}]}
    sd=$((seed + i))
    out=$logs/$s-$sd.log
    rc=0
    (cd "$logs" && timeout -k 10 "$limit" "$bin" "$s" "$sd" --run-ms "$run_ms") >"$out" 2>&1 || rc=$?
    line=$(grep '^FAULT ' "$out" | tail -1 || true)
    runs[$s]=$((${runs[$s]:-0} + 1))
    total_runs=$((total_runs + 1))
    if ((rc == 77)); then
        skipped[$s]=$((${skipped[$s]:-0} + 1))
        total_skipped=$((total_skipped + 1))
    elif ((rc != 0)); then
        failed[$s]=$((${failed[$s]:-0} + 1))
        total_failed=$((total_failed + 1))
        echo "FAILED: $s seed $sd (exit $rc): $out" >&2
        grep -E 'FAIL|error|saved|ERROR' "$out" | head -5 >&2 || true
    else
        o=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<<"$line")
        f=$(sed -n 's/.* faults=\([0-9]*\).*/\1/p' <<<"$line")
        t=$(sed -n 's/.* terms=\([0-9]*\).*/\1/p' <<<"$line")
        ops[$s]=$((${ops[$s]:-0} + ${o:-0}))
        faults[$s]=$((${faults[$s]:-0} + ${f:-0}))
        terms[$s]=$((${terms[$s]:-0} + ${t:-0}))
        total_ops=$((total_ops + ${o:-0}))
        total_faults=$((total_faults + ${f:-0}))
        rm -f "$out"
    fi
    i=$((i + 1))
done

printf '%-18s %5s %9s %7s %6s  %s\n' scenario runs operations faults terms outcome
for s in "${all[@]}"; do
    [[ -n ${runs[$s]:-} ]] || continue
    outcome=passed
    ((${skipped[$s]:-0})) && outcome="skipped (${skipped[$s]} runs: needs root)"
    ((${failed[$s]:-0})) && outcome="FAILED ${failed[$s]} of ${runs[$s]}"
    printf '%-18s %5d %9d %7d %6d  %s\n' "$s" "${runs[$s]}" "${ops[$s]:-0}" "${faults[$s]:-0}" \
        "${terms[$s]:-0}" "$outcome"
done
verdict=pass
((total_failed)) && verdict=FAIL
echo "fault suite: ${#all[@]} scenarios, $total_runs runs, $total_ops operations, $total_faults faults," \
    "$total_skipped skipped, $total_failed failed, seeds $seed..$((seed + i - 1)): $verdict (logs: $logs)"
((total_failed == 0)) && [[ -z $(ls -A "$logs") ]] && rmdir "$logs"
((total_failed == 0))
