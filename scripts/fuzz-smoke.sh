#!/usr/bin/env bash
# Runs every Fuzz target of the module for a bounded time (FUZZTIME, default 5s).
# A crash fails the run (the input is kept under testdata/fuzz/ as a seed).
# Go's fuzzer reports "context deadline exceeded" when a loaded machine has
# not finished gathering baseline coverage within the fuzz time: that is not
# a finding, so such a run is retried once with twice the time.
set -euo pipefail
t=${FUZZTIME:-5s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
n=0
for pkg in $(go list ./... | grep -v /e2e); do
  if ! list=$(go test -list '^Fuzz' "$pkg" 2>"$log"); then
    echo "fuzz: cannot list the tests of $pkg:"; cat "$log"; exit 1
  fi
  for f in $(printf '%s\n' "$list" | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $f ($t)"
    if ! go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$pkg" >"$log" 2>&1; then
      if grep -q 'Failing input written' "$log" || ! grep -q 'context deadline exceeded' "$log"; then
        cat "$log"; exit 1
      fi
      t2="$(( ${t%s} * 2 ))s"
      echo "fuzz: $f: baseline coverage not gathered in $t (machine busy); retrying with $t2"
      go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t2" "$pkg" >"$log" 2>&1 || { cat "$log"; exit 1; }
    fi
    n=$((n+1))
  done
done
echo "fuzz: $n targets, no crash"
