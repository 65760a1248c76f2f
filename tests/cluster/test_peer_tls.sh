#!/usr/bin/env bash
# Peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file) on real keeld processes:
#  1. three members with peer TLS elect, replicate (a put on the leader read on a follower) and
#     come back from a restart;
#  2. a plaintext member cannot talk to TLS members: both sides log why, the others go on;
#  3. a member whose certificate does not name its peer address is refused by those that dial it;
#  4. SIGHUP reloads the peer certificates: swapped for another CA's, new links are refused; a
#     file that cannot be used keeps the old ones (logged); swapped back, new links work;
#  5. a fourth member with a certificate from another CA, added with `keelctl member add`, cannot
#     join: the refusal is logged on both sides.
#
#   test_peer_tls.sh KEELD KEELCTL GEN_CERTS
#
# Member i on 127.0.i.1 (gen-certs.sh's member-i names it), ports picked free; only the processes
# started here are stopped, by PID.
set -euo pipefail
KEELD=${1:?usage: test_peer_tls.sh KEELD KEELCTL GEN_CERTS}
CTL=${2:?usage}
GEN=${3:?usage}
command -v openssl >/dev/null || { echo "SKIP: the openssl command is not installed"; exit 77; }
. "$(dirname "$0")/../lib/members.sh"
tm_init peertls
TM_LOG_TAIL=15
fail() { tm_fail "$@"; }

"$GEN" "$dir/ca1" --members 4 >/dev/null
"$GEN" "$dir/ca2" --members 4 >/dev/null

tm_ports 4
initial="m1=127.0.1.1:${pport[1]}@z1,m2=127.0.2.1:${pport[2]}@z2,m3=127.0.3.1:${pport[3]}@z3"
ep() { echo "127.0.$1.1:${cport[$1]}"; }

# tls_flags DIR CERT: the three flags for member certificate CERT (member-i) of DIR.
tls_flags() { echo "--peer-cert-file $1/$2.pem --peer-key-file $1/$2-key.pem --peer-trusted-ca-file $1/ca.pem"; }

# start I [FLAGS...]: member I of the three (its log appended to).
start() {
  local i=$1
  shift
  # shellcheck disable=SC2068
  "$KEELD" --name "m$i" --data-dir "$dir/m$i" --listen-client "$(ep "$i")" \
    --listen-peer "127.0.$i.1:${pport[$i]}" --initial-cluster "$initial" \
    --heartbeat-ms 50 --election-ms 500 $@ >>"$dir/m$i.log" 2>&1 &
  pid[$i]=$!
}

# stop I: SIGTERM; member I must exit 0 by itself within 15 s (its peer links, TLS or not,
# wound down).
stop() { tm_stop "$1"; }

# put_via I KEY VALUE: retried (up to 30 s) until member I's cluster takes it.
put_via() {
  for _ in $(seq 1 150); do
    "$CTL" --endpoints "$(ep "$1")" --command-timeout 2s put "$2" "$3" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# sees I KEY VALUE: member I's own store has KEY=VALUE within 20 s (serializable reads).
sees() {
  local got=
  for _ in $(seq 1 100); do
    got=$("$CTL" --endpoints "$(ep "$1")" --command-timeout 1s get "$2" --consistency s \
      --print-value-only 2>/dev/null || true)
    [ "$got" = "$3" ] && return 0
    sleep 0.2
  done
  return 1
}

# never_sees I KEY VALUE: for 3 s, member I's store does not have KEY=VALUE.
never_sees() {
  for _ in $(seq 1 15); do
    got=$("$CTL" --endpoints "$(ep "$1")" --command-timeout 1s get "$2" --consistency s \
      --print-value-only 2>/dev/null || true)
    [ "$got" = "$3" ] && return 1
    sleep 0.2
  done
  return 0
}

# logged I TEXT: member I's log has TEXT within 10 s.
logged() {
  for _ in $(seq 1 100); do
    grep -qF -- "$2" "$dir/m$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

count() { grep -cF -- "$2" "$dir/m$1.log" 2>/dev/null || true; }

leader() {
  "$CTL" --endpoints "$(ep 1),$(ep 2),$(ep 3)" endpoint status 2>/dev/null |
    awk '/true/ { print $1 }' | head -n 1
}

# --- 0. files that cannot be used stop a member at start, naming the file ---------------------
rc=0
"$KEELD" --name m1 --data-dir "$dir/m0" --listen-client "$(ep 1)" --listen-peer "127.0.1.1:${pport[1]}" \
  --initial-cluster "$initial" --peer-cert-file "$dir/nosuch.pem" \
  --peer-key-file "$dir/ca1/member-1-key.pem" --peer-trusted-ca-file "$dir/ca1/ca.pem" \
  >"$dir/m0.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "keeld started with a missing --peer-cert-file"
grep -qF "peer TLS: certificate file $dir/nosuch.pem: No such file or directory" "$dir/m0.log" ||
  fail "keeld does not name the missing certificate file: $(tail -n 2 "$dir/m0.log")"
rc=0
"$KEELD" --name m1 --data-dir "$dir/m0" --listen-client "$(ep 1)" --listen-peer "127.0.1.1:${pport[1]}" \
  --initial-cluster "$initial" --peer-cert-file "$dir/ca1/member-1.pem" >"$dir/m0.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "keeld took --peer-cert-file alone (exit $rc)"
rm -rf "$dir/m0" "$dir/m0.log"

# --- 1. a TLS cluster: elects, replicates, survives a restart --------------------------------
for i in 1 2 3; do start "$i" $(tls_flags "$dir/ca1" "member-$i"); done
put_via 1 k1 v1 || fail "no put went through the TLS cluster"
for i in 1 2 3; do logged "$i" "peer TLS on:" || fail "m$i does not say peer TLS is on"; done
for i in 1 2 3; do sees "$i" k1 v1 || fail "m$i does not have k1 (replication over TLS)"; done
if grep -q 'TLS handshake failed' "$dir"/m[123].log; then fail "a TLS handshake failed between members of one CA"; fi

stop 2
put_via 1 k2 v2 || fail "no put with m2 down"
start 2 $(tls_flags "$dir/ca1" member-2)
sees 2 k2 v2 || fail "m2 did not catch up after its restart"
put_via 2 k3 v3 || fail "no put through the restarted m2"
sees 3 k3 v3 || fail "m3 does not have k3"

# --- 2. a plaintext member among TLS ones ----------------------------------------------------
stop 3
start 3
logged 3 "the peer speaks TLS: peer TLS is on there and off here" ||
  fail "plaintext m3 does not say a TLS member dialled it"
logged 1 "peer TLS is off there and on here" || logged 2 "peer TLS is off there and on here" ||
  fail "no TLS member says plaintext m3 dialled it"
t0=$(date +%s%N)
put_via 1 k4 v4 || fail "no put while a plaintext member knocks"
echo "put with a plaintext member knocking: $((($(date +%s%N) - t0) / 1000000)) ms"
never_sees 3 k4 v4 || fail "plaintext m3 got k4 from TLS members"
stop 3
start 3 $(tls_flags "$dir/ca1" member-3)
sees 3 k4 v4 || fail "m3 back on TLS did not catch up"

# --- 3. a certificate that does not name the member's address --------------------------------
stop 3
n1=$(count 1 "TLS handshake failed")
n2=$(count 2 "TLS handshake failed")
start 3 $(tls_flags "$dir/ca1" member-1) # names 127.0.1.1, not m3's 127.0.3.1
ok=0
for _ in $(seq 1 100); do
  if grep -F "m3 (" "$dir/m1.log" "$dir/m2.log" | grep -F 'TLS handshake failed' |
    grep -qiE 'mismatch'; then
    ok=1
    break
  fi
  sleep 0.1
done
[ "$ok" = 1 ] || fail "no member refused m3's certificate that does not name 127.0.3.1"
# ... and the members m3 dials refuse it too: the certificate is not the claimed member's.
ok=0
for _ in $(seq 1 100); do
  if grep -F 'its certificate does not name 127.0.3.1' "$dir/m1.log" "$dir/m2.log" >/dev/null; then
    ok=1
    break
  fi
  sleep 0.1
done
[ "$ok" = 1 ] || fail "no member refused m3's dial with a certificate that names another member"
put_via 1 k5 v5 || fail "no put while m3 has a wrong certificate"
never_sees 3 k5 v5 || fail "m3 with a certificate for another address got k5"
stop 3
start 3 $(tls_flags "$dir/ca1" member-3)
sees 3 k5 v5 || fail "m3 with its own certificate did not catch up"

# --- 4. SIGHUP reloads the peer certificates -------------------------------------------------
# m3 runs on copies that are swapped under it.
mkdir -p "$dir/m3tls"
cp "$dir/ca1/member-3.pem" "$dir/ca1/member-3-key.pem" "$dir/ca1/ca.pem" "$dir/m3tls/"
stop 3
start 3 --peer-cert-file "$dir/m3tls/member-3.pem" --peer-key-file "$dir/m3tls/member-3-key.pem" \
  --peer-trusted-ca-file "$dir/m3tls/ca.pem"
sees 3 k5 v5 || fail "m3 on copied certificates does not run"
put_via 1 k6 v6 || fail "no put"
sees 3 k6 v6 || fail "m3 on copied certificates does not get k6"
m3pid=${pid[3]}
# Another CA's certificates: links made from now on fail.
cp "$dir/ca2/member-3.pem" "$dir/ca2/member-3-key.pem" "$dir/ca2/ca.pem" "$dir/m3tls/"
kill -HUP "$m3pid"
logged 3 "peer TLS: reloaded" || fail "m3 did not reload on SIGHUP"
# Followers dial each other only to elect: with m1 down, m2 (restarted, so its log starts
# afresh) and m3 must, and m3's new certificates are refused both ways.
stop 1
stop 2
start 2 $(tls_flags "$dir/ca1" member-2)
ok=0
for _ in $(seq 1 100); do
  grep -F 'm3 (' "$dir/m2.log" | grep -qF 'TLS handshake failed' && { ok=1; break; }
  sleep 0.1
done
[ "$ok" = 1 ] || fail "after m3's reload to another CA, m2 did not refuse m3"
grep -F 'm3 (' "$dir/m2.log" | grep -F 'TLS handshake failed' | tail -n 1
# A certificate file that cannot be used: the reload fails, the certificates in use stay.
echo "not a certificate" >"$dir/m3tls/member-3.pem"
kill -HUP "$m3pid"
logged 3 "peer TLS: reload failed, keeping the certificates in use" ||
  fail "m3 did not log its failed reload"
kill -0 "$m3pid" || fail "m3 exited after a failed reload"
# Back to the cluster's CA: with m1 down, m2 and m3 make a quorum only over new links.
cp "$dir/ca1/member-3.pem" "$dir/ca1/member-3-key.pem" "$dir/ca1/ca.pem" "$dir/m3tls/"
kill -HUP "$m3pid"
for _ in $(seq 1 50); do [ "$(count 3 "peer TLS: reloaded")" -ge 2 ] && break; sleep 0.1; done
[ "$(count 3 "peer TLS: reloaded")" -ge 2 ] || fail "m3 did not reload the second time"
put_via 2 k7 v7 || fail "m2 and m3 do not make a quorum after m3 reloaded the cluster's CA"
sees 3 k7 v7 || fail "m3 does not have k7"
[ "${pid[3]}" = "$m3pid" ] || fail "m3 was restarted"
start 1 $(tls_flags "$dir/ca1" member-1)
sees 1 k7 v7 || fail "m1 did not catch up"

# --- 5. a member with another CA's certificate cannot join -----------------------------------
"$CTL" --endpoints "$(ep 1),$(ep 2),$(ep 3)" member add m4 --peer-urls "http://127.0.4.1:${pport[4]}" \
  --zone z4 >"$dir/add.out" || fail "member add m4: $(cat "$dir/add.out")"
"$KEELD" --name m4 --data-dir "$dir/m4" --listen-client "$(ep 4)" \
  --listen-peer "127.0.4.1:${pport[4]}" --initial-cluster "$initial,m4=127.0.4.1:${pport[4]}@z4" \
  --initial-cluster-state existing --heartbeat-ms 50 --election-ms 500 \
  $(tls_flags "$dir/ca2" member-4) >>"$dir/m4.log" 2>&1 &
pid[4]=$!
logged 4 "TLS handshake failed" || fail "m4 (another CA) logs no refused TLS handshake"
ok=0
for _ in $(seq 1 100); do
  if grep -hF 'TLS handshake failed' "$dir/m1.log" "$dir/m2.log" "$dir/m3.log" |
    grep -qE '127\.0\.4\.1:'; then
    ok=1
    break
  fi
  sleep 0.1
done
[ "$ok" = 1 ] || fail "no member of the cluster logs refusing m4"
grep -hF 'TLS handshake failed' "$dir/m4.log" | head -n 1
grep -hF 'TLS handshake failed' "$dir/m1.log" "$dir/m2.log" "$dir/m3.log" |
  grep -E '127\.0\.4\.1:' | head -n 2
put_via 1 k8 v8 || fail "no put with m4 knocking"
never_sees 4 k8 v8 || fail "m4 of another CA got k8"
# Every member stops cleanly, and a sanitizer build finds nothing on the way (links, pumps and
# contexts all freed).
for i in 1 2 3 4; do stop "$i"; done
if grep -lE 'Sanitizer|runtime error' "$dir"/m*.log; then fail "a sanitizer report in a member's log"; fi
echo "peer TLS: all checks passed"
