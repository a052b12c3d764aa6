#!/usr/bin/env bash
# Restore benchmark: an in-place restore of 3 volumes whose every block
# changed after the marker, against a raw copy of the same bytes (dd
# conv=fsync) on the same disk, in one run, printed as a ratio.
# Usage: scripts/bench-restore.sh [ROUNDS] [MIB_PER_VOLUME]
# (defaults 3 and 1024; TMPDIR picks the disk; needs ~7 x 3 x MIB of space).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
mib=${2:-1024}
uname -sr
grep -m1 'model name' /proc/cpuinfo || true
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
LOCKSTEP_BENCH_RESTORE=1 LOCKSTEP_BENCH_ROUNDS="$rounds" LOCKSTEP_BENCH_MIB="$mib" \
  go test -count=1 -timeout 60m -v -run '^TestBenchRestore$' ./tests/restore/ | grep -E 'round|fill|RESULT|step roll|FAIL|ok'
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
