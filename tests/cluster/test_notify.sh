#!/usr/bin/env bash
# systemd's readiness protocol: keeld started with NOTIFY_SOCKET (as a Type=notify unit) sends
# READY=1 once it serves clients (its client port answers when the datagram arrives) and
# STOPPING=1 on SIGTERM; without NOTIFY_SOCKET it starts as before. The sample unit in
# deploy/systemd names only flags keeld has.
#
#   test_notify.sh KEELD
#
# One member on 127.0.192.1 (ports picked free); only that process is stopped, by PID.
set -euo pipefail
KEELD=${1:?usage: test_notify.sh KEELD}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || { echo "SKIP: python3 is not installed"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-notify.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
host=127.0.192.1
ports=$("$PY" -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.192.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r cport pport <<<"$ports"

# The listener: every datagram, each on a line of $dir/said, until STOPPING=1 (at most 30 s); on
# READY=1 it checks at once that the client port takes a connection.
"$PY" - "$dir/notify" "$dir/said" "$host" "$cport" <<'PYEOF' &
import socket, sys, time
path, out, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(30)
with open(out, "w") as f:
    end = time.time() + 30
    while time.time() < end:
        msg = s.recv(4096).decode()
        line = msg.replace("\n", " ")
        if "READY=1" in msg:
            c = socket.create_connection((host, port), timeout=2)
            c.close()
            line += " (client port open)"
        f.write(line + "\n")
        f.flush()
        if "STOPPING=1" in msg:
            break
PYEOF
listener=$!
for _ in $(seq 1 50); do [ -S "$dir/notify" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$dir/notify" "$KEELD" --name n1 --data-dir "$dir/n1" --listen-client "$host:$cport" \
  --listen-peer "$host:$pport" --initial-cluster "n1=$host:$pport" >"$dir/n1.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q 'READY=1' "$dir/said" 2>/dev/null && break; sleep 0.1; done
grep -q '^READY=1 (client port open)$' "$dir/said" || { echo "no READY=1: $(cat "$dir/said")"; exit 1; }
kill -TERM "$pid"
wait "$pid" || { echo "keeld exited with $?"; exit 1; }
pid=
wait "$listener" || { echo "the listener failed"; exit 1; }
grep -q '^STOPPING=1$' "$dir/said" || { echo "no STOPPING=1: $(cat "$dir/said")"; exit 1; }

# Every flag the sample unit passes is one keeld knows.
unit=$HERE/../../deploy/systemd/keeld.service
[ -f "$unit" ] || { echo "no $unit"; exit 1; }
grep -q '^Type=notify$' "$unit" || { echo "the unit is not Type=notify"; exit 1; }
help=$("$KEELD" --help)
exec_start=$(awk '/^ExecStart=/ { on = 1 } on { print; if ($0 !~ /\\$/) exit }' "$unit")
[ -n "$exec_start" ] || { echo "no ExecStart in the unit"; exit 1; }
for flag in $(grep -o -- '--[a-z-]*' <<<"$exec_start" | sort -u); do
  grep -q -- "$flag" <<<"$help" || { echo "the unit passes $flag, which keeld does not know"; exit 1; }
done
echo PASS
