#!/usr/bin/env bash
# Build keel's libFuzzer targets with clang (build/fuzz: the whole project instrumented, only the
# fuzz targets linked with libFuzzer's main) and run each for a while on its seed corpus.
#
#   tests/fuzz/run.sh [--seconds N] [--target NAME]... [--jobs J] [--build-only] [--seeds]
#
#   --seconds N   how long each target runs (default 30)
#   --target NAME only this target (repeatable; default every one in targets.cmake)
#   --jobs J      targets run at the same time (default 1)
#   --build-only  configure and build, run nothing
#   --seeds       rewrite tests/fuzz/corpus/ from seeds.c, run nothing
#
# Each target fuzzes build/fuzz/work/<name>/corpus, which starts as a copy of
# tests/fuzz/corpus/<name>/ and keeps what earlier runs found; the repository's corpus is never
# written. One summary line per target; a crash, leak, timeout or broken invariant is saved
# under build/fuzz/work/<name>/crashes/ (the line names the file), and the exit status is 1.
# Replay one with: build/fuzz/tests/fuzz/fuzz_<name> <file>
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${KEEL_FUZZ_BUILD:-$root/build/fuzz}
seconds=30
jobs=1
targets=()
build_only=0
seeds=0

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "$0"
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
    --seconds) seconds=${2:?}; shift 2 ;;
    --target) targets+=("${2:?}"); shift 2 ;;
    --jobs) jobs=${2:?}; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --seeds) seeds=1; shift ;;
    -h | --help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
    esac
done
case $seconds$jobs in *[!0-9]*) echo "run.sh: --seconds and --jobs take numbers" >&2; exit 2 ;; esac

all=$(sed -n 's/^set(KEEL_FUZZ_TARGETS \(.*\))$/\1/p' "$root/tests/fuzz/targets.cmake")
[ ${#targets[@]} -gt 0 ] || read -r -a targets <<<"$all"
for t in "${targets[@]}"; do
    case " $all " in *" $t "*) ;; *) echo "run.sh: no target '$t' (targets: $all)" >&2; exit 2 ;; esac
done

# The longest input each target is given: room for what it parses, small enough to mutate fast.
max_len() {
    case $1 in
    frame | apply | gw_grpc) echo 16384 ;;
    request) echo 8192 ;;
    ctl_txn) echo 4096 ;;
    ctl_args) echo 2048 ;;
    handshake) echo 512 ;;
    *) echo 4096 ;;
    esac
}

# A dictionary for targets whose parsers compare through uninstrumented libc calls.
dict_of() {
    case $1 in
    ctl_args | ctl_txn) echo "$root/tests/fuzz/ctl.dict" ;;
    esac
}

if ! command -v clang >/dev/null; then
    echo "run.sh: clang is needed (Debian: clang, libclang-rt-dev; scripts/deps.sh installs them)" >&2
    exit 1
fi

# Configure once; later runs only rebuild what changed. The build lock keeps two runs started
# together (ctest -j) from building the same tree at once.
mkdir -p "$build"
exec 9>"$build/.lock"
flock 9
if ! grep -q '^KEEL_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
    CC=clang cmake -S "$root" -B "$build" -DKEEL_FUZZ=ON -DBUILD_TESTING=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
build_targets=()
if [ $seeds -eq 1 ]; then
    build_targets=(fuzz_seeds)
else
    for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
fi
start=$(date +%s)
nice -n 19 cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" \
    --target "${build_targets[@]}" >"$build/build.log" 2>&1 || {
    cat "$build/build.log" >&2
    exit 1
}
echo "fuzz: built ${build_targets[*]} in $(($(date +%s) - start)) s ($build)"
flock -u 9

if [ $seeds -eq 1 ]; then
    rm -rf "$root/tests/fuzz/corpus"
    mkdir -p "$root/tests/fuzz/corpus"
    "$build/tests/fuzz/fuzz_seeds" "$root/tests/fuzz/corpus"
    echo "fuzz: seeds written to tests/fuzz/corpus/"
    exit 0
fi
[ $build_only -eq 0 ] || exit 0

# One target: fuzz for $seconds, then print its summary line. 0 when nothing was found.
run_one() {
    local t=$1 work=$build/work/$1
    mkdir -p "$work/corpus" "$work/crashes"
    rm -rf "$work/tmp"
    mkdir -p "$work/tmp"
    cp -n "$root/tests/fuzz/corpus/$t/"* "$work/corpus/" 2>/dev/null || true
    local rc=0 dict
    dict=$(dict_of "$t")
    # libFuzzer needs its own sanitizer settings: it reports and saves a crash itself, so ASan
    # must not abort first (test.sh exports abort_on_error for the unit tests).
    TMPDIR=$work/tmp \
        ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:allocator_may_return_null=0 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        nice -n "${KEEL_FUZZ_NICE:-19}" "$build/tests/fuzz/fuzz_$t" "$work/corpus" \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/crashes/" -print_final_stats=1 ${dict:+-dict="$dict"} \
        >"$work/log" 2>&1 || rc=$?
    rm -rf "$work/tmp"
    local execs secs cov ft corp
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$work/log" | tail -1 | cut -d' ' -f2)
    corp=$(find "$work/corpus" -type f | wc -l)
    local result=ok
    if [ $rc -ne 0 ]; then
        local saved
        saved=$(grep -o 'Test unit written to .*' "$work/log" | tail -1 | cut -d' ' -f5)
        result="FAILED (exit $rc): ${saved:-no input saved}; log $work/log"
    fi
    printf 'fuzz %-10s %10s execs  %4s s  %6s/s  cov %-5s ft %-6s corpus %-5s %s\n' "$t" \
        "${execs:-?}" "$seconds" "${secs:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$result"
    if [ $rc -ne 0 ]; then
        # The report itself: what broke, and where.
        grep -m1 -A25 -E '^==[0-9]+==ERROR|runtime error|invariant broken|ERROR: libFuzzer' \
            "$work/log" | sed 's/^/    /' >&2 || true
        return 1
    fi
}

failed=0
for t in "${targets[@]}"; do
    if [ "$jobs" -le 1 ]; then
        run_one "$t" || failed=1
        continue
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    rm -f "$build/work/$t.rc"
    (
        rc=0
        run_one "$t" || rc=$?
        echo $rc >"$build/work/$t.rc"
    ) &
done
wait
if [ "$jobs" -gt 1 ]; then
    for t in "${targets[@]}"; do
        [ "$(cat "$build/work/$t.rc" 2>/dev/null)" = 0 ] || failed=1
    done
fi
exit $failed
