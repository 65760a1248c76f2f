# shellcheck shell=bash
# What the shell cluster tests share (sourced): a data dir removed at exit, the keeld processes
# they start (stopped at exit by PID, TERM then KILL), failing with the members' log tails, and
# free client/peer ports for member i on 127.0.i.1.
#
#   . tests/lib/members.sh
#   tm_init NAME        # $dir, the EXIT trap, KEEL_* variables of the caller's environment unset
#   pid[i]=$!           # a member started: stopped at exit
#   tm_ports N          # cport[i] and pport[i] for members 1..N, free when asked
#   tm_fail MSG         # prints FAIL: MSG, each $dir/m*.log's last TM_LOG_TAIL lines, exits 1
#   tm_stop I           # SIGTERM to member I: it must exit 0 within 15 s
#
# KEEL_KEEP_TEST_DATA=1 keeps $dir. Needs python3 (tm_ports), as keel's other tests.

declare -gA pid=()
TM_LOG_TAIL=${TM_LOG_TAIL:-20}

tm_cleanup() {
  local p alive
  for p in "${pid[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    alive=0
    for p in "${pid[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pid[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${KEEL_KEEP_TEST_DATA:-}" ]; then
    echo "test data kept in $dir"
    return
  fi
  rm -rf "$dir"
}

tm_init() {
  PY=/usr/bin/python3
  [ -x "$PY" ] || PY=$(command -v python3) || { echo "SKIP: python3 is not installed"; exit 77; }
  dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-$1.XXXXXX")
  trap tm_cleanup EXIT
  local v
  while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(KEEL_[A-Za-z0-9_]*\)=.*/\1/p')
}

tm_fail() {
  local f
  echo "FAIL: $*"
  for f in "$dir"/m*.log; do
    [ -e "$f" ] || continue
    echo "--- $f"
    tail -n "$TM_LOG_TAIL" "$f"
  done
  exit 1
}

tm_ports() {
  local -a got
  read -r -a got <<<"$("$PY" -c '
import socket, sys
s = []
for i in range(1, int(sys.argv[1]) + 1):
    for _ in range(2):
        x = socket.socket(); x.bind(("127.0.%d.1" % i, 0)); s.append(x)
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1")"
  cport=("") pport=("")
  local i
  for ((i = 0; i < $1; i++)); do
    cport+=("${got[2 * i]}")
    pport+=("${got[2 * i + 1]}")
  done
}

# tm_stop I: SIGTERM to member I (pid[I]), which must exit 0 by itself within 15 s.
tm_stop() {
  local p=${pid[$1]} rc=0
  kill -TERM "$p"
  for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "pid[$1]"
    tm_fail "m$1 did not stop within 15 s of SIGTERM"
  fi
  wait "$p" || rc=$?
  unset "pid[$1]"
  [ "$rc" = 0 ] || tm_fail "m$1 exited $rc on SIGTERM"
}
