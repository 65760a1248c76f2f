#!/usr/bin/env bash
# keeld --config-file: a 3-member cluster whose members take every setting from a YAML file
# (initial-cluster as a YAML list), one of them overridden from the environment (KEEL_ELECTION_MS)
# and one by a flag on member 1 (--heartbeat-ms); a put through one member is read through another.
# Each member's effective-configuration line shows the file's, the environment's and the flag's
# values; an unknown KEEL_* variable is warned about, not refused; a file with an unknown key is
# refused naming the file, its line and the key. Then the KEEL_* variables `keelctl member add`
# prints, exported, with --listen-client and --data-dir, start a fourth member that joins.
# The samples in deploy/systemd (keel.yaml, keeld.env) each give keeld a whole configuration.
#
#   test_config_file.sh KEELD KEELCTL
#
# Members on 127.0.196.1-4 (ports picked free); only those processes are stopped, by PID.
set -euo pipefail
KEELD=${1:?usage: test_config_file.sh KEELD KEELCTL}
CTL=${2:?usage: test_config_file.sh KEELD KEELCTL}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || { echo "SKIP: python3 is not installed"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-configfile.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do # up to 10 s to hand over and drain, then they are killed
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
# No KEEL_* setting of the caller's shell may reach these members.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(KEEL_[A-Za-z0-9_]*\)=.*/\1/p')

# A client and a peer port on each member's address, all bound at once so none repeats.
read -r c1 p1 c2 p2 c3 p3 c4 p4 <<<"$("$PY" -c '
import socket
s = []
for i in (1, 2, 3, 4):
    for _ in range(2):
        x = socket.socket(); x.bind(("127.0.196.%d" % i, 0)); s.append(x)
print(" ".join(str(x.getsockname()[1]) for x in s))')"
cport=("" "$c1" "$c2" "$c3")
pport=("" "$p1" "$p2" "$p3")

for i in 1 2 3; do
  cat >"$dir/m$i.yaml" <<EOF
# member m$i of a cluster of three, as /etc/keel/keel.yaml would hold it
name: m$i
data-dir: $dir/m$i
listen-client: "127.0.196.$i:${cport[$i]}"
listen-peer: 127.0.196.$i:${pport[$i]}
initial-cluster:
  - m1=127.0.196.1:$p1@z1
  - m2=127.0.196.2:$p2@z2
  - m3=127.0.196.3:$p3@z3
initial-cluster-state: new
heartbeat-ms: 50
election-ms: 500
log-format: text
EOF
done
# election-ms from the environment beats the file's; member 1's flag beats both for heartbeat-ms.
KEEL_ELECTION_MS=600 KEEL_NOT_A_SETTING=1 "$KEELD" --config-file "$dir/m1.yaml" \
  --heartbeat-ms 60 >"$dir/m1.log" 2>&1 &
pids+=($!)
for i in 2 3; do
  KEEL_ELECTION_MS=600 "$KEELD" --config-file "$dir/m$i.yaml" >"$dir/m$i.log" 2>&1 &
  pids+=($!)
done

ep1=127.0.196.1:$c1
ep3=127.0.196.3:$c3
ok=0
for _ in $(seq 1 150); do
  if "$CTL" --endpoints "$ep1" --command-timeout 2s put cfgkey from-a-config-file >/dev/null 2>&1; then
    ok=1
    break
  fi
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a member exited:"; tail -n 5 "$dir"/m*.log; exit 1; }
  done
  sleep 0.2
done
[ "$ok" = 1 ] || { echo "no put went through"; tail -n 5 "$dir"/m*.log; exit 1; }
got=$("$CTL" --endpoints "$ep3" get cfgkey --print-value-only)
[ "$got" = from-a-config-file ] || { echo "m3 reads '$got'"; exit 1; }

for i in 1 2 3; do
  line=$(grep 'effective configuration' "$dir/m$i.log") || { echo "m$i: no configuration line"; exit 1; }
  want_hb=50
  [ "$i" = 1 ] && want_hb=60
  for want in "name=m$i " "zone=z$i " "listen-client=127.0.196.$i:${cport[$i]} " \
      "election-ms=600 " "heartbeat-ms=$want_hb "; do
    grep -qF -- "$want" <<<"$line" || { echo "m$i: no '$want' in: $line"; exit 1; }
  done
done
grep -qF "settings from config file $dir/m1.yaml: name data-dir listen-client listen-peer initial-cluster initial-cluster-state log-format; environment: election-ms; flags: heartbeat-ms (" "$dir/m1.log" ||
  { echo "m1 does not say where its settings came from: $(grep 'settings from' "$dir/m1.log")"; exit 1; }
grep -q 'KEEL_NOT_A_SETTING' "$dir/m1.log" || { echo "m1 did not warn of KEEL_NOT_A_SETTING"; exit 1; }
if grep -q 'KEEL_NOT_A_SETTING' "$dir/m2.log"; then echo "m2 warned of a variable it lacks"; exit 1; fi

# A member added with keelctl starts from the variables it prints (and two flags).
"$CTL" --endpoints "$ep1" member add m4 --peer-urls "http://127.0.196.4:$p4" --zone z4 \
  >"$dir/add.out" || { echo "member add failed"; exit 1; }
for v in KEEL_NAME KEEL_INITIAL_CLUSTER KEEL_INITIAL_CLUSTER_STATE KEEL_LISTEN_PEER; do
  grep -q "^$v=\"" "$dir/add.out" || { echo "member add printed no $v: $(cat "$dir/add.out")"; exit 1; }
done
(
  while IFS= read -r l; do
    if [[ $l =~ ^(KEEL_[A-Z_]+)=\"(.*)\"$ ]]; then export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"; fi
  done <"$dir/add.out"
  exec "$KEELD" --listen-client "127.0.196.4:$c4" --data-dir "$dir/m4"
) >"$dir/m4.log" 2>&1 &
pids+=($!)
got=
for _ in $(seq 1 150); do
  got=$("$CTL" --endpoints "127.0.196.4:$c4" --command-timeout 2s get cfgkey --consistency s \
    --print-value-only 2>/dev/null) && [ "$got" = from-a-config-file ] && break
  kill -0 "${pids[3]}" 2>/dev/null || { echo "m4 exited:"; tail -n 5 "$dir/m4.log"; exit 1; }
  sleep 0.2
done
[ "$got" = from-a-config-file ] || { echo "m4 reads '$got'"; tail -n 5 "$dir/m4.log"; exit 1; }
grep -q 'effective configuration: name=m4 zone=z4 .*initial-cluster-state=existing' "$dir/m4.log" ||
  { echo "m4 did not start as a joining member: $(grep 'effective' "$dir/m4.log")"; exit 1; }
if grep -q 'no keeld setting' "$dir/m4.log"; then echo "m4 warned of a printed variable"; exit 1; fi

# A typo in the file: refused before anything starts, naming the file, the line and the key.
printf 'name: m1\nheartbeat-intervall: 100\n' >"$dir/typo.yaml"
rc=0
"$KEELD" --config-file "$dir/typo.yaml" >"$dir/typo.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || { echo "a file with an unknown key: exit $rc"; cat "$dir/typo.out"; exit 1; }
grep -qF "config file $dir/typo.yaml: line 2: unknown key 'heartbeat-intervall'" "$dir/typo.out" ||
  { echo "unexpected refusal: $(cat "$dir/typo.out")"; exit 1; }
# The samples: keeld takes each as a whole configuration (the effective-configuration line is
# said), then fails to bind 10.0.1.10, not an address of this host (bounded: should it be one,
# the member is stopped). Only the data dir is moved to scratch space.
sample() { # sample NAME COMMAND...: run it, the output in $dir/NAME.out
  local name=$1
  shift
  "$@" >"$dir/$name.out" 2>&1 &
  local p=$!
  pids+=("$p")
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  grep -q 'effective configuration: name=m1 zone=us-east-1a .*initial-cluster=m1=10.0.1.10:2380@us-east-1a,m2=10.0.2.10:2380@us-east-1b,m3=10.0.3.10:2380@us-east-1c .*log-format=json' "$dir/$name.out" ||
    { echo "the $name sample is no whole configuration: $(head -n 3 "$dir/$name.out")"; exit 1; }
  if grep -q 'no keeld setting' "$dir/$name.out"; then echo "$name: $(cat "$dir/$name.out")"; exit 1; fi
}
samples=$HERE/../../deploy/systemd
sample yaml env KEEL_DATA_DIR="$dir/sample-yaml" "$KEELD" --config-file "$samples/keel.yaml"
sample env bash -c 'set -a; . "$1"; set +a; KEEL_DATA_DIR=$2 exec "$3"' _ "$samples/keeld.env" \
  "$dir/sample-env" "$KEELD"

echo PASS
