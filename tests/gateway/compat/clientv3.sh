#!/usr/bin/env bash
# Go clientv3 (Debian golang-etcd-server-dev, etcd 3.4, unmodified) against a real etcd 3.4 (3
# members, the oracle) and against keel-gateway in front of a real 3-member keel cluster: builds
# tests/gateway/compat/conformance offline in GOPATH mode (as bench/compare-etcd.sh builds
# bench/etcd-driver), runs its scenario list against both and compares the results field by
# field. Exits 1 on any difference, 77 when go, Debian's clientv3 or etcd is missing.
#
#   tests/gateway/compat/clientv3.sh KEEL_GATEWAY KEELD BUILD_DIR
# COMPAT_AGAINST_ETCD=1: against a second etcd instead (a check of the test itself);
# KEEL_KEEP_TEST_DATA=1 keeps the outputs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh" || exit 1

[ $# -eq 3 ] || { echo "usage: $0 KEEL_GATEWAY KEELD BUILD_DIR" >&2; exit 2; }
gateway=$1
keeld=$2
build=$(mkdir -p "$3" && cd "$3" && pwd)

command -v etcd >/dev/null || compat_skip "no etcd (Debian etcd-server)"
command -v go >/dev/null || compat_skip "no go (Debian golang-go)"
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || compat_skip "no clientv3 (Debian golang-etcd-server-dev)"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

compat_init clientv3 136

# Build (GOPATH mode, offline; the cache in the build dir makes a rebuild take seconds).
bin=$build/conformance
mkdir -p "$build/gopath"
if [ ! -x "$bin" ] || [ "$here/conformance/main.go" -nt "$bin" ]; then
    compat_log "building conformance"
    (cd "$here" && GO111MODULE=off GOPROXY=off GOFLAGS='' GOPATH=/usr/share/gocode:$build/gopath \
        GOCACHE=$build/gocache go build -o "$bin.tmp" ./conformance) >"$COMPAT_DIR/build.log" 2>&1 ||
        { cat "$COMPAT_DIR/build.log" >&2; compat_die "go build failed"; }
    mv "$bin.tmp" "$bin"
fi

compat_start_etcd
compat_start_target "$gateway" "$keeld"

timeout 120 "$bin" run "$ETCD_EP" >"$COMPAT_DIR/etcd.jsonl" 2>"$COMPAT_DIR/etcd-run.log"
rc=$?
[ $rc -eq 0 ] || { cat "$COMPAT_DIR/etcd-run.log" >&2; compat_die "conformance against etcd exited $rc"; }
timeout 120 "$bin" run "$GW_EP" >"$COMPAT_DIR/gateway.jsonl" 2>"$COMPAT_DIR/gateway-run.log"
rc=$?
[ $rc -eq 0 ] || { cat "$COMPAT_DIR/gateway-run.log" >&2; compat_log "conformance against the gateway exited $rc"; }
"$bin" compare "$COMPAT_DIR/etcd.jsonl" "$COMPAT_DIR/gateway.jsonl"
status=$?
[ $rc -eq 0 ] || status=1
compat_alive "$GW_PID" || { compat_log "keel-gateway is not running at the end"; status=1; }
compat_stop_gateway || status=1
exit $status
