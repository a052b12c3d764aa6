#!/usr/bin/env bash
# Runs every native Go fuzz target in the module for a short time each.
#
# Go 1.26's fuzz coordinator can fail a duration-bounded run with a bare
# "context deadline exceeded" at the -fuzztime boundary when a loaded machine
# starves its workers (go.dev/issue/75804, fixed in Go 1.27). That failure
# writes no crasher. When it happens, the target is run again once with a
# count-based budget (the executions the timed run reached), which has no
# deadline to race. A real crasher always writes testdata/fuzz/<target>/ and
# fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

crashers() { find "$1/testdata/fuzz/$2" -type f 2>/dev/null | sort || true; }

for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz: $pkg $fn ($t)"
    before=$(crashers "$dir" "$fn")
    if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg" >"$log" 2>&1; then
      continue
    fi
    after=$(crashers "$dir" "$fn")
    if [[ "$before" == "$after" ]] && grep -q '^    context deadline exceeded$' "$log" \
      && ! grep -q 'Failing input written' "$log"; then
      execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
      execs=$(( ${execs:-0} > 10000 ? execs : 10000 ))
      echo "fuzz: $fn hit the Go fuzz coordinator's deadline race (go.dev/issue/75804, no crasher written); again with -fuzztime ${execs}x"
      if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "${execs}x" "$pkg" >"$log" 2>&1; then
        continue
      fi
    fi
    cat "$log"
    exit 1
  done
done
echo "fuzz: ok"
