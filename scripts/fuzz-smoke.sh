#!/usr/bin/env bash
# Runs every Fuzz target of the module for a bounded time (FUZZTIME, default 5s).
set -euo pipefail
t=${FUZZTIME:-5s}
n=0
for pkg in $(go list ./... | grep -v /e2e); do
  for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $f ($t)"
    go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$pkg" >/tmp/pbxguard-fuzz.log 2>&1 || { cat /tmp/pbxguard-fuzz.log; exit 1; }
    n=$((n+1))
  done
done
echo "fuzz: $n targets, no crash"
