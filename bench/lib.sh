# shellcheck shell=bash
# Helpers the bench scripts share (sourced, after `cd` to the repository's top).

# stop_pids SECONDS PID...: SIGTERM each, wait up to SECONDS for them all to exit, SIGKILL what
# is left, and reap them. Only the given processes: those the script started itself.
stop_pids() {
  local secs=$1 p alive
  shift
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 $((secs * 10))); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
