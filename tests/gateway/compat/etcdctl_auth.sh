#!/usr/bin/env bash
# etcd's users, roles and permissions through keel-gateway, driven by the real etcdctl 3.4 and
# compared with a real etcd 3.4 (the oracle) step by step:
#  - root and a role with a key prefix set up and auth enabled through etcdctl (user add, role
#    add, grant-permission --prefix, grant-role, auth enable);
#  - etcdctl --user alice:pw put/get/watch inside alice's prefix works, outside it gets
#    "etcdserver: permission denied", a wrong password etcd's authentication-failed message, no
#    user etcd's "user name is empty"; a txn checks each of its ops; alice's lease is kept alive
#    and revoked on her token; --user root user list / user get / role get work, alice
#    may not list users; a revoked permission denies at once; etcd's errors for a missing user
#    and for deleting root; auth disable;
# each step's exit code, stdout and "Error:" line equal on both. Then, on keel only, the same with
# TLS on the gateway's listener: etcdctl --cacert --cert --key --user through keel-gateway, and
# curl with a token from /v3/auth/authenticate in the Authorization header (etcd's JSON gateway).
#
#   etcdctl_auth.sh KEEL_GATEWAY KEELD GEN_CERTS
#
# Blocks 156..160 (lib.sh): keel on 156..158, etcd on 159, the gateways on 160.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
GW=${1:?usage: etcdctl_auth.sh KEEL_GATEWAY KEELD GEN_CERTS}
KEELD=${2:?usage}
GEN=${3:?usage}
. "$here/lib.sh" || exit 1
command -v etcd >/dev/null || compat_skip "no etcd (Debian etcd-server)"
command -v etcdctl >/dev/null || compat_skip "no etcdctl (Debian etcd-client)"
command -v openssl >/dev/null || compat_skip "the openssl command is not installed"
command -v curl >/dev/null || compat_skip "curl is not installed"
ctl_version=$(etcdctl version 2>/dev/null)
[[ "$ctl_version" == "etcdctl version: 3.4."* ]] || compat_skip "etcdctl is not 3.4 ($ctl_version)"
compat_init etcdctl-auth 156
COMPAT_FAIL=0

# step DIR NAME ARGS...: etcdctl ARGS against $EP, bounded; keeps the exit code, stdout and
# etcdctl's "Error:" lines (its other stderr lines are clientv3's retry logs, with times and
# addresses) in DIR/NAME.
step() {
    local dir=$1 name=$2
    shift 2
    local out err rc
    out=$(timeout 30 etcdctl --endpoints "$EP" --dial-timeout 5s --command-timeout 10s "$@" \
        2>"$dir/stderr")
    rc=$?
    err=$(grep '^Error:' "$dir/stderr")
    printf 'rc=%s\n%s\n%s\n' "$rc" "$out" "$err" >"$dir/$name"
}

# watch_step DIR NAME ARGS...: a watch, ended after its first event's value v1 or when
# etcdctl exits (bounded); keeps its output but clientv3's logs.
watch_step() {
    local dir=$1 name=$2
    shift 2
    timeout 30 etcdctl --endpoints "$EP" --dial-timeout 5s "$@" >"$dir/$name.raw" 2>&1 &
    local pid=$! end=$((SECONDS + 20))
    while [ $SECONDS -lt $end ] && ! grep -q '^v1$' "$dir/$name.raw"; do
        compat_alive "$pid" || break
        sleep 0.2
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    grep -v '^{' "$dir/$name.raw" >"$dir/$name"
}

suite() { # DIR
    local d=$1
    mkdir -p "$d"
    step "$d" 01-user-add-root user add root:rootpw
    step "$d" 02-role-add-root role add root
    step "$d" 03-grant-root user grant-role root root
    step "$d" 04-role-add-app role add app
    step "$d" 05-grant-perm role grant-permission app --prefix=true readwrite /app/
    step "$d" 06-user-add-alice user add alice:alicepw
    step "$d" 07-grant-alice user grant-role alice app
    step "$d" 08-auth-enable auth enable
    step "$d" 09-alice-put --user alice:alicepw put /app/x v1
    step "$d" 10-alice-get --user alice:alicepw get /app/x
    step "$d" 11-alice-put-outside --user alice:alicepw put /other v
    step "$d" 12-alice-get-outside --user alice:alicepw get /other
    step "$d" 13-alice-get-range --user alice:alicepw get /app/ --prefix
    step "$d" 14-wrong-password --user alice:nope get /app/x
    step "$d" 15-no-user get /app/x
    step "$d" 16-root-user-list --user root:rootpw user list
    step "$d" 17-root-user-get --user root:rootpw user get alice
    step "$d" 18-root-role-get --user root:rootpw role get app
    step "$d" 19-alice-user-list --user alice:alicepw user list
    step "$d" 20-alice-del-outside --user alice:alicepw del /other
    step "$d" 21-root-get-outside --user root:rootpw get /other
    watch_step "$d" 22-alice-watch --user alice:alicepw watch /app/x --rev=1
    watch_step "$d" 22b-alice-watch-outside --user alice:alicepw watch /other --rev=1
    step "$d" 22c-alice-txn-outside --user alice:alicepw txn <<<$'value("/app/x") = "v1"\n\nput /other v\n\n'
    step "$d" 22d-alice-txn-inside --user alice:alicepw txn <<<$'value("/app/x") = "v1"\n\nput /app/y v\n\n'
    # A lease of alice's, kept alive on a stream with her token (its id replaced by LEASE).
    step "$d" 22e-alice-lease --user alice:alicepw lease grant 60
    local lid
    lid=$(sed -n 's/^lease \([0-9a-f]*\) granted.*/\1/p' "$d/22e-alice-lease")
    step "$d" 22f-alice-keepalive --user alice:alicepw lease keep-alive --once "${lid:-0}"
    step "$d" 22g-alice-revoke --user alice:alicepw lease revoke "${lid:-0}"
    [ -z "$lid" ] || sed -i "s/$lid/LEASE/g" "$d/22e-alice-lease" "$d/22f-alice-keepalive" \
        "$d/22g-alice-revoke"
    step "$d" 23-user-get-missing --user root:rootpw user get nobody
    step "$d" 24-role-get-missing --user root:rootpw role get nothing
    step "$d" 25-delete-root --user root:rootpw user delete root
    step "$d" 26-revoke --user root:rootpw role revoke-permission app /app/ --prefix=true
    step "$d" 27-alice-get-revoked --user alice:alicepw get /app/x
    step "$d" 28-passwd --user root:rootpw user passwd alice --interactive=false <<<"alicepw2"
    step "$d" 29-old-password --user alice:alicepw get /app/x
    step "$d" 30-auth-disable --user root:rootpw auth disable
    step "$d" 31-get-after-disable get /app/x
}

compat_start_etcd 3
compat_start_target "$GW" "$KEELD"
EP=$ETCD_EP suite "$COMPAT_DIR/etcd"
EP=$GW_EP suite "$COMPAT_DIR/gateway"
for f in "$COMPAT_DIR"/etcd/[0-9]*; do
    [[ $f == *.raw ]] && continue
    name=$(basename "$f")
    if diff -u "$f" "$COMPAT_DIR/gateway/$name" >"$COMPAT_DIR/$name.diff"; then
        ok "$name: $(head -c 120 "$f" | tr '\n' ' ')"
    else
        bad "$name differs from etcd:"$'\n'"$(cat "$COMPAT_DIR/$name.diff")"
    fi
done
# The comparison proves nothing if both sides failed alike: the steps that must work did.
contains "alice reads her key" $'rc=0\n/app/x\nv1' "$(cat "$COMPAT_DIR/gateway/10-alice-get")"
contains "alice is denied outside" "Error: etcdserver: permission denied" \
    "$(cat "$COMPAT_DIR/gateway/11-alice-put-outside")"
contains "a wrong password" "Error: etcdserver: authentication failed, invalid user ID or password" \
    "$(cat "$COMPAT_DIR/gateway/14-wrong-password")"
contains "root lists the users" $'rc=0\nalice\nroot' "$(cat "$COMPAT_DIR/gateway/16-root-user-list")"
contains "alice watches her key" $'PUT\n/app/x\nv1' "$(cat "$COMPAT_DIR/gateway/22-alice-watch")"
contains "alice keeps her lease alive" "lease LEASE keepalived with TTL(" \
    "$(cat "$COMPAT_DIR/gateway/22f-alice-keepalive")"

# --- TLS on the gateway's listener (keel only) ----------------------------------------------
host=127.0.160.1
ca=$COMPAT_DIR/ca
"$GEN" "$ca" --members 1 --hosts "IP:$host" >/dev/null || compat_die "gen-certs.sh failed"
port=$(compat_free_port "$host" 35060) || compat_die "no free port on $host"
"$GW" --listen "$host:$port" --endpoints "$KEEL_ENDPOINTS" --cert-file "$ca/member-1.pem" \
    --key-file "$ca/member-1-key.pem" --trusted-ca-file "$ca/ca.pem" --client-cert-auth \
    >"$COMPAT_DIR/gwtls.log" 2>&1 &
tls_pid=$!
COMPAT_PIDS+=("$tls_pid")
EP=https://$host:$port
# etcdctl over TLS with a client certificate: its exit code; its output without clientv3's logs.
T() {
    local o rc
    o=$(timeout 30 etcdctl --endpoints "$EP" --dial-timeout 5s --command-timeout 10s \
        --cacert "$ca/ca.pem" --cert "$ca/client-root.pem" --key "$ca/client-root-key.pem" "$@" 2>&1)
    rc=$?
    grep -v '^{' <<<"$o"
    return $rc
}
compat_wait 30 T get compat-ready || compat_die "etcdctl over TLS to keel-gateway: $(T get x)"
check "TLS: auth enable" "Authentication Enabled" "$(T auth enable)"
# alice's permission was revoked and her password changed (steps 26, 28).
check "TLS: root grants alice's prefix again" "Role app updated" \
    "$(T --user root:rootpw role grant-permission app --prefix=true readwrite /app/)"
check "TLS: alice puts inside her prefix" "OK" "$(T --user alice:alicepw2 put /app/tls v-tls)"
check "TLS: alice gets" "v-tls" "$(T --user alice:alicepw2 get /app/tls --print-value-only)"
check "TLS: alice outside" "Error: etcdserver: permission denied" \
    "$(T --user alice:alicepw2 put /other v)"
check "TLS: wrong password" "Error: etcdserver: authentication failed, invalid user ID or password" \
    "$(T --user alice:nope get /app/tls)"
check "TLS: root lists users" $'alice\nroot' "$(T --user root:rootpw user list)"
# etcd's JSON gateway: the token from /v3/auth/authenticate in the Authorization header.
C() { curl -sS --http1.1 --cacert "$ca/ca.pem" --cert "$ca/client-root.pem" \
    --key "$ca/client-root-key.pem" "$@"; }
tok=$(C "$EP/v3/auth/authenticate" -d '{"name":"alice","password":"alicepw2"}' | py 'j["token"]')
[ -n "$tok" ] || bad "JSON: no token from /v3/auth/authenticate"
contains "JSON: a range with alice's token" "\"value\":\"$(printf v-tls | base64)\"" \
    "$(C -H "Authorization: $tok" "$EP/v3/kv/range" -d "{\"key\":\"$(printf /app/tls | base64)\"}")"
contains "JSON: outside her prefix" '"code":7' \
    "$(C -H "Authorization: $tok" "$EP/v3/kv/range" -d "{\"key\":\"$(printf /other | base64)\"}")"
contains "JSON: no token" "etcdserver: user name is empty" \
    "$(C "$EP/v3/kv/range" -d "{\"key\":\"$(printf /app/tls | base64)\"}")"
contains "JSON: a forged token" '"code":16' \
    "$(C -H "Authorization: forged" "$EP/v3/kv/range" -d "{\"key\":\"$(printf /app/tls | base64)\"}")"
long=$(head -c 600 /dev/zero | tr '\0' t)
contains "JSON: a token longer than keel issues" '"code":16' \
    "$(C -H "Authorization: $long" "$EP/v3/kv/range" -d "{\"key\":\"$(printf /app/tls | base64)\"}")"
check "TLS: auth disable" "Authentication Disabled" "$(T --user root:rootpw auth disable)"

kill -TERM "$tls_pid" 2>/dev/null
compat_stop_gateway || bad "keel-gateway did not stop cleanly"
grep -q Sanitizer "$COMPAT_DIR/gwtls.log" && bad "sanitizer report: $(grep -A 20 Sanitizer "$COMPAT_DIR/gwtls.log")"
compat_done
