#!/usr/bin/env bash
# Journal benchmarks against raw baselines on the same disk, in one run, with
# ratios. Usage: scripts/bench.sh [ROUNDS]   (LOCKSTEP_BENCH_DIR picks the disk)
# Rounds interleave Lockstep and the baseline so drift hits both alike; the
# median of the rounds is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -c -o /tmp/lockstep-store.bench ./engine/store/
for r in $(seq "$rounds"); do
  /tmp/lockstep-store.bench -test.run '^$' -test.bench 'AppendFlush|RawAppendFsync' -test.benchtime 3000x >>"$out"
done
/tmp/lockstep-store.bench -test.run '^$' -test.bench 'ReadLatency' -test.benchtime 20000x >>"$out"
/tmp/lockstep-store.bench -test.run '^$' -test.bench 'PresentView' -test.benchtime 200x >>"$out"
uname -sr; grep -m1 '^cpu:' "$out" || true
python3 - "$out" <<'PY'
import re, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r'^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$', line)
    if not m: continue
    name, rest = m.group(1), m.group(3)
    vals = dict((u, float(v)) for v, u in re.findall(r'([\d.]+) (\S+)', rest))
    rows.setdefault(name, []).append(vals)
def med(name, unit): return statistics.median(r[unit] for r in rows[name] if unit in r)
print("\n== append, 4 KiB writes each followed by a flush (MB/s; median of rounds) ==")
for w in (1, 64):
    a, r = med(f"BenchmarkAppendFlush/writers={w}", "MB/s"), med(f"BenchmarkRawAppendFsync/writers={w}", "MB/s")
    print(f"writers={w:<3} lockstep {a:8.2f}  raw pwrite+fsync {r:8.2f}  ratio {a/r:5.2f}x  (target >= 0.90x)")
print("\n== 4 KiB reads: current state vs point in time (ns) ==")
for n in (1000, 100000, 1000000):
    k = f"BenchmarkReadLatency/records={n}"
    if k not in rows: continue
    c99, p99 = med(k, "cur-p99-ns"), med(k, "pit-p99-ns")
    print(f"records={n:<8} cur p50 {med(k,'cur-p50-ns'):7.0f} p99 {c99:7.0f}  pit p50 {med(k,'pit-p50-ns'):7.0f} p99 {p99:7.0f}  pit/cur p99 {p99/c99:4.2f}x (target <= 1.5x)  index {med(k,'index-B/record'):5.1f} B/record (target <= 48)")
print("\n== presenting a 10 GiB volume at a past point ==")
for k in ("view", "clone"):
    n = f"BenchmarkPresentView/{k}"
    if n in rows: print(f"{k:<6} {med(n,'ns/op')/1e6:9.3f} ms (target < 100 ms)")
PY
