#!/usr/bin/env bash
# Auto-compaction with real keeld processes (etcd's --auto-compaction-mode/-retention):
#   revision  --auto-compaction-retention 10: once writes stop, every member compacts to the
#             last revision - 10 (the leader proposes it; all apply it), and the 10 revisions
#             kept stay readable;
#   periodic  --auto-compaction-retention 2s: while a writer puts a key every 100 ms for 7 s,
#             compactions happen, and never take a revision written in the last 2 s.
# Bad flag values are refused at start with a message naming the flag.
#
#   test_autocompact.sh KEELD KEELCTL
#
# Uses the 127.0.x.1 blocks 161..163 and 166..168.
set -euo pipefail
KEELD=${1:?usage: test_autocompact.sh KEELD KEELCTL}
CTL=${2:?usage: test_autocompact.sh KEELD KEELCTL}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../gateway/compat/lib.sh
. "$HERE/../gateway/compat/lib.sh"

compat_init autocompact 161
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || compat_skip "python3 is not installed"


# ---- bad values are refused at start, naming the flag
out=$("$KEELD" --name a --data-dir "$COMPAT_DIR/bad" --listen-client 127.0.161.1:1 \
    --listen-peer 127.0.161.1:2 --initial-cluster a=127.0.161.1:2 \
    --auto-compaction-mode revision --auto-compaction-retention 1h 2>&1) && bad "keeld took a bad retention"
contains "revision mode wants a number" "--auto-compaction-retention '1h'" "$out"
out=$("$KEELD" --name a --data-dir "$COMPAT_DIR/bad" --listen-client 127.0.161.1:1 \
    --listen-peer 127.0.161.1:2 --initial-cluster a=127.0.161.1:2 \
    --auto-compaction-mode hourly 2>&1) && bad "keeld took a bad mode"
contains "mode named" "--auto-compaction-mode 'hourly'" "$out"

# compacted EPS: every member's compacted revision, space-separated
compacted() { "$CTL" --endpoints "$1" endpoint status -w json | py '" ".join(str(e["Status"].get("compactRevision", 0)) for e in j)'; }

# ---- revision mode
compat_start_keel "$KEELD" 0 --auto-compaction-mode revision --auto-compaction-retention 10 \
    --auto-compaction-interval-ms 200
EPS=$KEEL_ENDPOINTS
for i in $(seq 1 40); do "$CTL" --endpoints "$EPS" put "r$((i % 7))" "v$i" >/dev/null; done
rev=$("$CTL" --endpoints "$EPS" get r1 -w json | py 'j["header"]["revision"]')
want="$((rev - 10)) $((rev - 10)) $((rev - 10))"
end=$((SECONDS + 20))
while [ "$(compacted "$EPS")" != "$want" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
check "revision: every member compacted to revision - 10" "$want" "$(compacted "$EPS")"
out=$("$CTL" --endpoints "$EPS" get r1 --rev $((rev - 11)) 2>&1) && bad "a compacted revision was served"
contains "revision: below is compacted" "compacted" "$out"
check "revision: the 10 kept are readable" "0" \
    "$("$CTL" --endpoints "$EPS" get r1 --rev $((rev - 10)) >/dev/null 2>&1; echo $?)"
grep -q "auto-compaction: compacting to revision $((rev - 10))" "$COMPAT_DIR"/keel-m*.log &&
    ok "revision: the leader logged it" || bad "no member logged the compaction"

# ---- periodic mode
compat_start_keel "$KEELD" 5 --auto-compaction-retention 2s
EPS=$KEEL_ENDPOINTS
"$PY" - "$CTL" "$EPS" "$COMPAT_DIR/writes" <<'EOF'
import json, subprocess, sys, time
ctl, eps, out = sys.argv[1:4]
start = time.monotonic()
with open(out, "w") as f:
    i = 0
    while time.monotonic() - start < 7.0 and i < 200:
        t = time.monotonic()
        r = subprocess.run([ctl, "--endpoints", eps, "put", "p", str(i), "-w", "json"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            f.write("%f %d\n" % (t, json.loads(r.stdout)["header"]["revision"]))
        i += 1
        time.sleep(0.1)
EOF
C=$("$CTL" --endpoints "$EPS" endpoint status -w json | py 'max(e["Status"].get("compactRevision", 0) for e in j)')
T=$("$PY" -c 'import time; print(time.monotonic())')
first=$(head -1 "$COMPAT_DIR/writes" | awk '{print $2}')
check "periodic: it compacted within the run" "yes" "$([ "$C" -gt "$first" ] && echo yes || echo no)"
# Every write begun in the last 2 s (before the compacted revision was read) is above it.
recent=$(awk -v t="$T" '$1 >= t - 2.0 {print $2}' "$COMPAT_DIR/writes" | head -1)
if [ -n "$recent" ]; then
    check "periodic: the last 2 s of history kept (first recent revision $recent, compacted $C)" \
        "yes" "$([ "$recent" -ge "$C" ] && echo yes || echo no)"
else
    bad "periodic: no write in the last 2 s to check (the writer was too slow)"
fi

compat_done
