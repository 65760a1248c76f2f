#!/usr/bin/env bash
# A member added while auth is on catches up from a checkpoint (README "Checkpoint fetch"): it
# starts with an empty store that holds no auth state, behind the leader's raft snapshots, and
# fetches the checkpoint from the leader's peer port as a member (no auth token). Once plaintext,
# once with peer TLS:
#  1. three members, snapshots every few entries; keys written, root made, auth enabled, more
#     keys written as root (so the snapshots are taken with auth on);
#  2. `keelctl member add m4` as root, m4 started empty: it logs "checkpoint restored", and a
#     serializable read on it as root returns every key;
#  3. the leader still answers the client port's Snapshot to root only (keelctl snapshot save
#     without a user is refused);
#  4. every member stops cleanly, and no sanitizer report is in any log.
#
#   test_member_add_auth.sh KEELD KEELCTL GEN_CERTS plain|tls
#
# Member i on 127.0.i.1, ports picked free; only the processes started here are stopped, by PID.
set -euo pipefail
KEELD=${1:?usage: test_member_add_auth.sh KEELD KEELCTL GEN_CERTS plain|tls}
CTL=${2:?usage}
GEN=${3:?usage}
MODE=${4:?usage}
if [ "$MODE" = tls ]; then
  command -v openssl >/dev/null || { echo "SKIP: the openssl command is not installed"; exit 77; }
fi
. "$(dirname "$0")/../lib/members.sh"
tm_init addauth
fail() { tm_fail "($MODE) $*"; }

tm_ports 4
initial="m1=127.0.1.1:${pport[1]}@z1,m2=127.0.2.1:${pport[2]}@z2,m3=127.0.3.1:${pport[3]}@z3"
ep() { echo "127.0.$1.1:${cport[$1]}"; }
all="$(ep 1),$(ep 2),$(ep 3)"

tls=()
if [ "$MODE" = tls ]; then
  "$GEN" "$dir/ca" --members 4 >/dev/null
fi
# tls_flags I: member I's peer TLS flags (none when plaintext).
tls_flags() {
  [ "$MODE" = tls ] || return 0
  echo "--peer-cert-file $dir/ca/member-$1.pem --peer-key-file $dir/ca/member-$1-key.pem" \
    "--peer-trusted-ca-file $dir/ca/ca.pem"
}

# start I INITIAL [FLAGS...]: member I (its log appended to), raft snapshots every 8 entries.
start() {
  local i=$1 init=$2
  shift 2
  # shellcheck disable=SC2046,SC2068
  "$KEELD" --name "m$i" --data-dir "$dir/m$i" --listen-client "$(ep "$i")" \
    --listen-peer "127.0.$i.1:${pport[$i]}" --initial-cluster "$init" \
    --heartbeat-ms 50 --election-ms 500 --snapshot-threshold 8 --snapshot-trailing 4 \
    $(tls_flags "$i") $@ >>"$dir/m$i.log" 2>&1 &
  pid[$i]=$!
}

stop() { tm_stop "$1"; }

# ctl ARGS...: keelctl against the three first members, retried (up to 30 s) until it succeeds.
ctl() {
  for _ in $(seq 1 150); do
    "$CTL" --endpoints "$all" --command-timeout 3s "$@" >"$dir/ctl.out" 2>&1 && return 0
    sleep 0.2
  done
  echo "keelctl $*: $(cat "$dir/ctl.out")"
  return 1
}

# logged I TEXT: member I's log has TEXT within 60 s.
logged() {
  for _ in $(seq 1 600); do
    grep -qF -- "$2" "$dir/m$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# --- 1. a cluster with snapshots, auth enabled ------------------------------------------------
for i in 1 2 3; do start "$i" "$initial"; done
for n in $(seq 1 40); do ctl put "k/$(printf %03d "$n")" "v$n" || fail "put k/$n"; done
ctl user add root:rootpw || fail "user add root"
ctl user grant-role root root || fail "grant-role root"
ctl auth enable || fail "auth enable"
sleep 1 # auth enable applied everywhere
"$CTL" --endpoints "$all" --command-timeout 3s put k/noauth x >/dev/null 2>&1 &&
  fail "a put without a user was taken with auth enabled"
# Written as root in one transaction per batch of keys: each keelctl run logs in (a password
# hash), so few runs; still well past the snapshot threshold.
for b in 1 2 3; do
  ops=()
  for n in $(seq 1 10); do ops+=(--then "put k/auth$b$n a$b$n"); done
  ctl --user root:rootpw txn "${ops[@]}" || fail "txn as root"
done
ctl --user root:rootpw put k/last done || fail "put k/last as root"
for i in 1 2 3; do
  ls "$dir/m$i"/raft/snapshot-* >/dev/null 2>&1 || fail "m$i took no raft snapshot"
done

# --- 2. member add as root; m4 starts empty and catches up from a checkpoint ------------------
ctl --user root:rootpw member add m4 --peer-urls "http://127.0.4.1:${pport[4]}" --zone z4 ||
  fail "member add m4"
start 4 "$initial,m4=127.0.4.1:${pport[4]}@z4" --initial-cluster-state existing
logged 4 "checkpoint restored" || fail "m4 restored no checkpoint"
grep -F "checkpoint fetch from" "$dir/m4.log" | grep -qF "failed" &&
  grep -F "checkpoint fetch from" "$dir/m4.log" | head -n 3
got=
for _ in $(seq 1 150); do
  got=$("$CTL" --endpoints "$(ep 4)" --command-timeout 2s --user root:rootpw get k/ --prefix \
    --consistency s --count-only 2>/dev/null || true)
  [ "$got" = 71 ] && break
  sleep 0.2
done
[ "$got" = 71 ] || fail "m4 serves $got keys under k/ to root, not 71"
v=$("$CTL" --endpoints "$(ep 4)" --command-timeout 2s --user root:rootpw get k/last \
  --consistency s --print-value-only) || fail "serializable get k/last on m4"
[ "$v" = done ] || fail "m4 has k/last = '$v'"
grep -qF "checkpoint fetch from member" "$dir/m1.log" "$dir/m2.log" "$dir/m3.log" ||
  fail "no member logs serving m4's fetch on its peer port"
echo "m4 ($MODE): $(grep -F 'checkpoint restored' "$dir/m4.log" | head -n 1)"

# --- 3. the client port's Snapshot is still root's ---------------------------------------------
"$CTL" --endpoints "$(ep 1)" --command-timeout 5s snapshot save "$dir/nouser.db" \
  >"$dir/save.out" 2>&1 && fail "snapshot save without a user was served with auth on"
"$CTL" --endpoints "$(ep 1)" --command-timeout 20s --user root:rootpw snapshot save \
  "$dir/root.db" >"$dir/save.out" 2>&1 || fail "snapshot save as root: $(cat "$dir/save.out")"

# --- 4. clean stops ----------------------------------------------------------------------------
for i in 4 1 2 3; do stop "$i"; done
if grep -lE 'Sanitizer|runtime error' "$dir"/m*.log; then fail "a sanitizer report in a member's log"; fi
echo "member add with auth on ($MODE): all checks passed"
