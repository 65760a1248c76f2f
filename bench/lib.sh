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

# etcd_driver ROOT [GIT_REV] -> the path of bench/etcd-driver's binary under ROOT/build, built
# first when it is missing or older than its sources: GOPATH mode, offline, against Debian's
# clientv3 under /usr/share/gocode. GIT_REV is stamped into it (its JSON says which revision of
# the driver measured). Non-zero when go build fails.
etcd_driver() {
  local root=$1 rev=${2:-unknown}
  local dir=$root/build/etcd-driver
  local bin=$dir/etcd-driver
  if [ ! -x "$bin" ] || [ -n "$(find "$root/bench/etcd-driver" -name '*.go' -newer "$bin")" ]; then
    echo "building bench/etcd-driver" >&2
    mkdir -p "$dir"
    (cd "$root" && GO111MODULE=off GOPROXY=off GOFLAGS='' GOPATH=/usr/share/gocode:$dir/gopath \
      GOCACHE=$dir/cache go build -ldflags "-X main.gitRevision=$rev" -o "$bin" ./bench/etcd-driver) ||
      return 1
  fi
  echo "$bin"
}
