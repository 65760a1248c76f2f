#!/usr/bin/env bash
# Install what is missing, build a Release build, and show keel working.
#
# The replicated server (keeld), the client library and keelctl are not built yet; until they
# land this shows the storage engine every replica will run: a short storage benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"

echo
echo "keel storage engine: apply and range throughput (a short run)"
"$build/bench/storage_bench" --keys 100000 --ops 20000
