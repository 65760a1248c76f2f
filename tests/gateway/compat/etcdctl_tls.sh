#!/usr/bin/env bash
# keel-gateway with TLS (--cert-file --key-file [--trusted-ca-file --client-cert-auth]) in front
# of a 3-member keel cluster that runs peer TLS, driven by the real etcdctl 3.4:
#  - etcdctl --cacert --cert --key put/get over https works (gRPC, ALPN h2), and curl over
#    HTTP/1.1 (ALPN http/1.1) reaches the JSON gateway on the same port;
#  - without --cacert etcdctl fails, with Go's certificate error, and the gateway logs the alert;
#  - a plaintext client is refused;
#  - with --client-cert-auth, etcdctl without a client certificate fails (the gateway logs that
#    none came) and with one works; a client certificate of another CA is refused;
#  - SIGHUP reloads the gateway's files; a bad file keeps the old ones;
#  - keel's members serve their client port over TLS too and require a client certificate: the
#    gateways reach them with --upstream-cacert --upstream-cert --upstream-key, and a gateway
#    without those flags gets nothing through (etcdctl fails, the members log the refusal).
#
#   etcdctl_tls.sh KEEL_GATEWAY KEELD GEN_CERTS
#
# Blocks 151..155 (lib.sh): keel on 151..153, the gateways on 155.
set -uo pipefail
GW=${1:?usage: etcdctl_tls.sh KEEL_GATEWAY KEELD GEN_CERTS}
KEELD=${2:?usage}
GEN=${3:?usage}
. "$(dirname "$0")/lib.sh"
compat_init etcdctl-tls 151
command -v etcdctl >/dev/null || compat_skip "etcdctl is not installed (Debian etcd-client)"
command -v openssl >/dev/null || compat_skip "the openssl command is not installed"
command -v curl >/dev/null || compat_skip "curl is not installed"

ca=$COMPAT_DIR/ca
"$GEN" "$ca" --members 3 --hosts IP:127.0.151.1,IP:127.0.152.1,IP:127.0.153.1,IP:127.0.155.1 \
    >/dev/null || compat_die "gen-certs.sh failed"
"$GEN" "$COMPAT_DIR/other" --members 1 >/dev/null || compat_die "gen-certs.sh failed"

compat_keel_plan "$KEELD" 0
for i in 1 2 3; do
    compat_keel_member "$i" --peer-cert-file "$ca/member-$i.pem" \
        --peer-key-file "$ca/member-$i-key.pem" --peer-trusted-ca-file "$ca/ca.pem" \
        --cert-file "$ca/member-$i.pem" --key-file "$ca/member-$i-key.pem" \
        --trusted-ca-file "$ca/ca.pem" --client-cert-auth
done
compat_wait 60 grep -q "became leader" "$COMPAT_DIR/keel-m1.log" "$COMPAT_DIR/keel-m2.log" \
    "$COMPAT_DIR/keel-m3.log" ||
    compat_die "keel with peer TLS elected no leader in 60 s"

host=127.0.155.1
# The gateway's own TLS to keel's members (their client port requires a client certificate).
upstream=(--upstream-cacert "$ca/ca.pem" --upstream-cert "$ca/client-root.pem"
    --upstream-key "$ca/client-root-key.pem")
# start_gw NAME FLAGS...: a TLS gateway (with $upstream unless NO_UPSTREAM=1); sets PORT and
# PID_<NAME>.
start_gw() {
    local name=$1 up=("${upstream[@]}")
    shift
    [ "${NO_UPSTREAM:-0}" = 1 ] && up=()
    PORT=$(compat_free_port "$host" 35040) || compat_die "no free port on $host"
    "$GW" --listen "$host:$PORT" --endpoints "$KEEL_ENDPOINTS" "${up[@]}" "$@" \
        >"$COMPAT_DIR/$name.log" 2>&1 &
    local pid=$!
    COMPAT_PIDS+=("$pid")
    eval "PID_$name=$pid"
    local end=$((SECONDS + 30))
    until (exec 3<>"/dev/tcp/$host/$PORT") 2>/dev/null; do
        compat_alive "$pid" || compat_die "$name exited: $(tail -n 3 "$COMPAT_DIR/$name.log")"
        [ $SECONDS -lt $end ] || compat_die "$name did not listen in 30 s"
        sleep 0.2
    done
}
E() { etcdctl --command-timeout 5s --dial-timeout 3s "$@"; }
client=(--cert "$ca/client-root.pem" --key "$ca/client-root-key.pem")

# --- server TLS only ------------------------------------------------------------------------
start_gw gw --cert-file "$ca/member-1.pem" --key-file "$ca/member-1-key.pem"
ep=https://$host:$PORT
compat_wait 30 E --endpoints "$ep" --cacert "$ca/ca.pem" "${client[@]}" put tls-k tls-v ||
    bad "etcdctl --cacert --cert --key put through the TLS gateway"
check "get over TLS" "tls-v" "$(E --endpoints "$ep" --cacert "$ca/ca.pem" "${client[@]}" get tls-k --print-value-only 2>&1)"
check "get over TLS, no client certificate asked" "tls-v" \
    "$(E --endpoints "$ep" --cacert "$ca/ca.pem" get tls-k --print-value-only 2>&1)"
out=$(curl -sS --http1.1 --cacert "$ca/ca.pem" "$ep/v3/kv/range" -d '{"key":"dGxzLWs="}' 2>&1)
contains "JSON gateway over TLS (HTTP/1.1)" '"value":"dGxzLXY="' "$out"
out=$(curl -sS -v --http1.1 --cacert "$ca/ca.pem" "$ep/v3/kv/range" -d '{"key":"dGxzLWs="}' 2>&1)
contains "ALPN http/1.1 agreed" "http/1.1" "$(grep -i 'ALPN' <<<"$out" | tr '\n' ' ')"

out=$(openssl s_client -connect "$host:$PORT" -alpn h2 -CAfile "$ca/ca.pem" </dev/null 2>&1)
contains "ALPN h2 agreed (gRPC)" "ALPN protocol: h2" "$out"
contains "TLS 1.3" "TLSv1.3" "$out"
out=$(E --endpoints "$ep" --debug get tls-k 2>&1)
rc=$?
check "without --cacert etcdctl fails" 1 "$([ $rc -ne 0 ] && echo 1 || echo 0)"
contains "etcdctl says why" "x509: certificate signed by unknown authority" "$out"
contains "the gateway logs the client's alert" "TLS handshake failed" "$(cat "$COMPAT_DIR/gw.log")"
out=$(E --endpoints "$ep" --cacert "$COMPAT_DIR/other/ca.pem" --debug get tls-k 2>&1)
rc=$?
check "with another CA etcdctl fails" 1 "$([ $rc -ne 0 ] && echo 1 || echo 0)"
contains "etcdctl says why (another CA)" "x509: certificate signed by unknown authority" "$out"
out=$(E --endpoints "http://$host:$PORT" get tls-k 2>&1)
rc=$?
check "a plaintext client is refused" 1 "$([ $rc -ne 0 ] && echo 1 || echo 0)"

# --- client certificates required --------------------------------------------------------------
start_gw gwauth --cert-file "$ca/member-1.pem" --key-file "$ca/member-1-key.pem" \
    --trusted-ca-file "$ca/ca.pem" --client-cert-auth
ep2=https://$host:$PORT
compat_wait 30 E --endpoints "$ep2" --cacert "$ca/ca.pem" "${client[@]}" put auth-k auth-v ||
    bad "put with a client certificate through --client-cert-auth"
check "get with a client certificate" "auth-v" \
    "$(E --endpoints "$ep2" --cacert "$ca/ca.pem" "${client[@]}" get auth-k --print-value-only 2>&1)"
out=$(E --endpoints "$ep2" --cacert "$ca/ca.pem" --debug get auth-k 2>&1)
rc=$?
check "no client certificate: etcdctl fails" 1 "$([ $rc -ne 0 ] && echo 1 || echo 0)"
compat_wait 10 grep -q "peer did not return a certificate" "$COMPAT_DIR/gwauth.log" &&
    ok "the gateway logs the missing client certificate" ||
    bad "gateway log does not say the client showed no certificate: $(grep TLS "$COMPAT_DIR/gwauth.log" | tail -n 2)"
out=$(E --endpoints "$ep2" --cacert "$ca/ca.pem" --cert "$COMPAT_DIR/other/client-root.pem" \
    --key "$COMPAT_DIR/other/client-root-key.pem" get auth-k 2>&1)
rc=$?
check "a client certificate of another CA: etcdctl fails" 1 "$([ $rc -ne 0 ] && echo 1 || echo 0)"

# --- SIGHUP --------------------------------------------------------------------------------------
kill -HUP "$PID_gwauth"
compat_wait 10 grep -q "TLS: certificates reloaded" "$COMPAT_DIR/gwauth.log" &&
    ok "SIGHUP reloads" || bad "no reload logged after SIGHUP"
cp "$ca/member-1.pem" "$COMPAT_DIR/gw-cert.pem"
start_gw gwhup --cert-file "$COMPAT_DIR/gw-cert.pem" --key-file "$ca/member-1-key.pem"
echo "not a certificate" >"$COMPAT_DIR/gw-cert.pem"
kill -HUP "$PID_gwhup"
compat_wait 10 grep -q "TLS: reload failed, keeping the certificates in use" "$COMPAT_DIR/gwhup.log" &&
    ok "a failed reload is logged" || bad "no failed reload logged"
check "the old certificate still serves" "tls-v" \
    "$(E --endpoints "https://$host:$PORT" --cacert "$ca/ca.pem" get tls-k --print-value-only 2>&1)"

# --- a gateway without --upstream-* in front of members that require TLS ---------------------
NO_UPSTREAM=1 start_gw gwplain --cert-file "$ca/member-1.pem" --key-file "$ca/member-1-key.pem"
out=$(E --endpoints "https://$host:$PORT" --cacert "$ca/ca.pem" get tls-k 2>&1)
rc=$?
check "no --upstream-* flags: nothing reaches keel's TLS members" 1 "$([ $rc -ne 0 ] && echo 1 || echo 0)"
compat_wait 10 grep -q "TLS handshake failed: wrong version number" "$COMPAT_DIR/keel-m1.log" \
    "$COMPAT_DIR/keel-m2.log" "$COMPAT_DIR/keel-m3.log" &&
    ok "a member logs the plaintext client on its TLS port" ||
    bad "no member logged a plaintext client: $(grep -h -i tls "$COMPAT_DIR"/keel-m*.log | tail -n 3)"
out=$("$GW" --listen "$host:1" --upstream-cert "$ca/client-root.pem" 2>&1)
rc=$?
check "--upstream-cert without --upstream-key is refused" 2 "$rc"
contains "and says why" "--upstream-cert and --upstream-key go together" "$out"

# Each gateway exits 0 on SIGTERM with no sanitizer report (connections, codecs, contexts freed).
for name in gw gwauth gwhup gwplain; do
    pid=$(eval echo "\$PID_$name")
    kill -TERM "$pid"
    end=$((SECONDS + 20))
    while compat_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.1; done
    wait "$pid"
    rc=$?
    if [ $rc -eq 0 ] && ! grep -q Sanitizer "$COMPAT_DIR/$name.log"; then
        ok "$name stops cleanly"
    else
        bad "$name exited $rc: $(grep -A 20 Sanitizer "$COMPAT_DIR/$name.log" | head -n 30)"
    fi
done
compat_done
