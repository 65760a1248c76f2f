#!/usr/bin/env bash
# python3-etcd3gw (Debian, unmodified; etcd's JSON gateway) against a real etcd 3.4 (3 members,
# the oracle; api_path /v3/, as etcd 3.4 answers /v3alpha/ with 404) and against keel-gateway in
# front of a real 3-member keel cluster, with /v3/ and with etcd3gw's default /v3alpha/: runs
# tests/gateway/compat/etcd3gw.py on each and compares. Exits 1 on any difference, 77 when etcd
# or python3-etcd3gw is missing.
#
#   tests/gateway/compat/etcd3gw.sh KEEL_GATEWAY KEELD
# COMPAT_AGAINST_ETCD=1: against a second etcd instead (a check of the test itself);
# KEEL_KEEP_TEST_DATA=1 keeps the outputs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh" || exit 1

[ $# -eq 2 ] || { echo "usage: $0 KEEL_GATEWAY KEELD" >&2; exit 2; }
gateway=$1
keeld=$2

command -v etcd >/dev/null || compat_skip "no etcd (Debian etcd-server)"
PY=/usr/bin/python3 # Debian's python, where python3-etcd3gw lives
if ! { [ -x "$PY" ] && "$PY" -c 'import etcd3gw' 2>/dev/null; }; then compat_skip "no python3-etcd3gw"; fi

compat_init etcd3gw 141
compat_start_etcd
compat_start_target "$gateway" "$keeld"

hostport() { local u=${1#http://}; echo "${u%:*} ${u##*:}"; }
runpy() { # NAME ENDPOINT API_PATH
    # shellcheck disable=SC2046
    timeout 120 "$PY" "$here/etcd3gw.py" run $(hostport "$2") "$3" >"$COMPAT_DIR/$1.jsonl" 2>"$COMPAT_DIR/$1.log"
    local rc=$?
    [ $rc -eq 0 ] || { tail -n 20 "$COMPAT_DIR/$1.log" >&2; compat_log "etcd3gw.py against $1 exited $rc"; }
    return $rc
}

runpy etcd "$ETCD_EP" /v3/ || compat_die "the oracle run failed"
status=0
# Each run on a fresh prefix state: the runs delete what they create, the marker aside.
runpy gateway-v3 "$GW_EP" /v3/ || status=1
"$PY" "$here/etcd3gw.py" compare "$COMPAT_DIR/etcd.jsonl" "$COMPAT_DIR/gateway-v3.jsonl" "api_path=/v3/" || status=1
if [ -z "${COMPAT_AGAINST_ETCD:-}" ]; then # etcd 3.4 itself answers /v3alpha/ with 404
    runpy gateway-default "$GW_EP" default || status=1
    "$PY" "$here/etcd3gw.py" compare "$COMPAT_DIR/etcd.jsonl" "$COMPAT_DIR/gateway-default.jsonl" "api_path=default(/v3alpha/)" || status=1
fi
compat_alive "$GW_PID" || { compat_log "keel-gateway is not running at the end"; status=1; }
compat_stop_gateway || status=1
exit $status
