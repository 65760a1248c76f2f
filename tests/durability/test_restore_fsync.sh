#!/usr/bin/env bash
# A restored copy is durable before it is declared ready (issue 9, hole 13): the incoming
# directory, where the copy's data.mdb was created, is fsynced before it is renamed to
# "<path>.ready". Without that fsync a power cut after the rename can leave a "ready" directory
# whose data.mdb entry never reached the disk, and ks_env_recover would swap in a store without
# its data. fsync is not observable from inside, so the real restore (test_restore) runs under
# strace and the order of its system calls is checked. Exit 77 (skipped) without strace or
# where ptrace is not allowed.
set -uo pipefail
bin=${1:?usage: test_restore_fsync.sh PATH/TO/test_restore}
command -v strace >/dev/null 2>&1 || { echo "SKIPPED: strace not installed"; exit 77; }
strace -f -qq -e trace=none true >/dev/null 2>&1 || { echo "SKIPPED: ptrace not permitted"; exit 77; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# LeakSanitizer cannot run under ptrace; the other test runs check leaks.
if ! ASAN_OPTIONS=detect_leaks=0 strace -f -qq -o "$log" -e trace=openat,fsync,close,rename "$bin" >/dev/null 2>&1; then
  echo "FAIL: $bin failed under strace" >&2
  exit 1
fi
# POSIX awk (Debian's default is mawk). Per process: remember the descriptor of each open of a *.incoming directory, mark it synced
# on fsync(fd), forget it on close(fd); each rename(*.incoming, *.ready) must come after a sync.
awk '
  /openat\(.*\.incoming", O_RDONLY.*O_DIRECTORY/ {
    n = split($0, p, "= "); fd = p[n] + 0; open[$1, fd] = 1; synced[$1] = 0; next }
  /fsync\(/ { s = $0; sub(/.*fsync\(/, "", s); if (open[$1, s + 0]) synced[$1] = 1; next }
  /close\(/ { s = $0; sub(/.*close\(/, "", s); delete open[$1, s + 0]; next }
  /rename\(".*\.incoming", ".*\.ready"\) = 0/ {
    renames++; if (!synced[$1]) { bad++; print "renamed before the directory was synced: " $0 }
    synced[$1] = 0 }
  END {
    if (renames == 0) { print "FAIL: no restore renamed an incoming copy"; exit 1 }
    if (bad > 0) { print "FAIL: " bad " of " renames " renames unsynced"; exit 1 }
    print "ok: " renames " restores synced their incoming directory before the rename" }
' "$log"
