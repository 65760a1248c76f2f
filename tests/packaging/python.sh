#!/usr/bin/env bash
# Run a test written in Python with Debian's python3 (where scripts/deps.sh installs
# python3-yaml), else the first python3 on PATH; exit 77 (skipped) when there is none.
#   python.sh SCRIPT ARGS...
for py in /usr/bin/python3 "$(command -v python3 || true)"; do
  if [ -n "$py" ] && [ -x "$py" ]; then
    exec "$py" "$@"
  fi
done
echo "SKIP: no python3"
exit 77
