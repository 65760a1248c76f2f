#!/usr/bin/env bash
# Install what is missing, build with AddressSanitizer + UndefinedBehaviorSanitizer (and the fuzz
# targets with clang: tests/fuzz/run.sh), run every test through ctest. Exit status is non-zero on
# any failure. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

build=build/asan
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON -DKEEL_WERROR=ON >/dev/null
cmake --build "$build" -j "$jobs"
# The fuzz targets' clang build (build/fuzz), before the tests: ctest's fuzz_* entries then only
# run them, 30 s each.
if command -v clang >/dev/null; then
    tests/fuzz/run.sh --build-only
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
ctest --output-on-failure -j "$jobs" --timeout 900
