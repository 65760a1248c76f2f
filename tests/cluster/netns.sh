#!/usr/bin/env bash
# netns.sh COMMAND [ARGS...]: run a test in a network namespace of its own with only loopback
# up. A name lookup the test provokes (a member named nosuch.invalid, which must not resolve)
# then fails at once instead of asking the machine's nameserver: tests send traffic only to
# 127.0.0.0/8. Every 127.0.0.0/8 address is local in the new namespace, as on the host.
# Skipped (77) where no namespace can be made (neither root nor unprivileged user namespaces).
set -u
u=""
if ! unshare --net -- true 2>/dev/null; then
  if unshare -r --net -- true 2>/dev/null; then
    u="-r"
  else
    echo "SKIP: cannot make a network namespace (needs root or unprivileged user namespaces)"
    exit 77
  fi
fi
ip=$(command -v ip || echo /usr/sbin/ip)
# shellcheck disable=SC2016
exec unshare $u --net -- bash -c '"$0" link set lo up || { echo "SKIP: cannot bring up lo"; exit 77; }; exec "$@"' "$ip" "$@"
