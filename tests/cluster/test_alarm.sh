#!/usr/bin/env bash
# The quota and the NOSPACE alarm with real keeld processes (etcd's behaviour): a cluster with a
# 1 MiB quota is filled until a put fails; that put raises the NOSPACE alarm on every member
# (keelctl alarm list on each, and in endpoint status's errors); while it is raised, writes that
# add data (a small put, a txn that puts, a lease grant) fail with "database space exceeded",
# while reads, deletes, txns that only delete, lease revokes and compaction go on; after
# deletes and a compaction, alarm disarm clears it on every member and writes work again;
# passing the quota again raises it again.
#
#   test_alarm.sh KEELD KEELCTL
#
# Uses the 127.0.x.1 blocks 171..173.
set -euo pipefail
KEELD=${1:?usage: test_alarm.sh KEELD KEELCTL}
CTL=${2:?usage: test_alarm.sh KEELD KEELCTL}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../gateway/compat/lib.sh
. "$HERE/../gateway/compat/lib.sh"

compat_init alarm 171
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3) || compat_skip "python3 is not installed"

compat_start_keel "$KEELD" 0 --quota-bytes 1048576
ctl() { "$CTL" --endpoints "$KEEL_ENDPOINTS" "$@"; }
each() { compat_each "$KEEL_ENDPOINTS" "$@"; }

lease=$(ctl lease grant 600 | awk '{print $2}')
ctl put --lease "$lease" leased v >/dev/null
check "no alarm at first" "" "$(ctl alarm list)"
big=$(head -c 100000 /dev/zero | tr '\0' x)
filled=0
for i in $(seq 1 30); do
    if ! out=$(ctl put "big$i" "$big" 2>&1); then
        filled=$i
        break
    fi
done
check "a put passed the 1 MiB quota" "yes" "$([ "$filled" -gt 1 ] && echo yes || echo no)"
contains "its error" "database space exceeded" "$out"
alarm=$(ctl alarm list)
contains "alarm list: NOSPACE" "alarm:NOSPACE" "$alarm"
# Every member applied the same entry: each lists the same alarm (bounded wait for followers).
end=$((SECONDS + 10))
while [ "$(each alarm list | sort -u)" != "$alarm " ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
check "every member lists it" "$alarm " "$(each alarm list | sort -u)"
contains "endpoint status shows it among the errors" "alarm:NOSPACE" "$(ctl endpoint status -w json)"

# While raised: additions fail, the rest goes on.
out=$(ctl put small x 2>&1) && bad "a small put went through under the alarm"
contains "a small put fails" "database space exceeded" "$out"
out=$(ctl txn --compare 'version("leased") > "0"' --then 'put t1 x' 2>&1) && bad "a txn that puts went through"
contains "a txn that puts fails" "database space exceeded" "$out"
out=$(ctl lease grant 60 2>&1) && bad "a lease grant went through under the alarm"
contains "a lease grant fails" "database space exceeded" "$out"
check "reads go on" "big1" "$(ctl get big1 --keys-only | head -1)"
check "deletes go on" "1" "$(ctl del big1)"
check "a txn that only deletes goes on" "SUCCESS" \
    "$(ctl txn --compare 'version("big2") > "0"' --then 'del big2' | head -1)"
check "revokes go on" "lease $lease revoked" "$(ctl lease revoke "$lease")"
for i in $(seq 3 "$filled"); do ctl del "big$i" >/dev/null; done
rev=$(ctl get x -w json | py 'j["header"]["revision"]')
check "compaction goes on" "compacted revision $rev" "$(ctl compaction "$rev")"
out=$(ctl put small x 2>&1) && bad "a put went through before the disarm"
contains "space freed, still refused until disarmed" "database space exceeded" "$out"

# Disarm: every member clears it; writes work again.
check "disarm lists what it cleared" "$alarm" "$(ctl alarm disarm)"
end=$((SECONDS + 10))
while [ "$(each alarm list | sort -u)" != "" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
check "no member lists it" "" "$(each alarm list | sort -u)"
check "writes again" "OK" "$(ctl put small x)"
check "lease grants again" "yes" "$(ctl lease grant 60 >/dev/null && echo yes || echo no)"

# Past the quota again: raised again.
for i in $(seq 1 30); do ctl put "again$i" "$big" >/dev/null 2>&1 || break; done
contains "raised again" "alarm:NOSPACE" "$(ctl alarm list)"

compat_done
