#!/usr/bin/env bash
# Benchmarks Lockstep's iSCSI target (`lockstep serve`, a journaled 1 GiB
# volume of 4096-byte blocks) against Linux tgt's tgtd (a plain 1 GiB file
# with 4096-byte blocks), both on loopback, with the same libiscsi
# initiators: `qemu-img bench` for writes and 1 MiB reads, `iscsi-perf` for
# reads too (its own queue, no qemu block layer in between).
# Results: docs/benchmarks-iscsi.md. Installs what it needs (root).
#
# Tunables (environment): TGT_PORT (3261), LOCKSTEP_PORT (3262),
# COUNT_4K_QD1 (20000), COUNT_4K_QD16 (50000), COUNT_FLUSH (3000),
# PERF_SECONDS (15), STEP_TIMEOUT (180 s per measurement), REPEAT (3),
# ROWS (row keys to run, e.g. "w1m r1m"; default all).
set -euo pipefail
cd "$(dirname "$0")/.."

TGT_PORT=${TGT_PORT:-3261}
LOCKSTEP_PORT=${LOCKSTEP_PORT:-3262}
COUNT_4K_QD1=${COUNT_4K_QD1:-20000}
COUNT_4K_QD16=${COUNT_4K_QD16:-50000}
COUNT_FLUSH=${COUNT_FLUSH:-3000}
PERF_SECONDS=${PERF_SECONDS:-15}
STEP_TIMEOUT=${STEP_TIMEOUT:-180}
REPEAT=${REPEAT:-3}
# qemu-img bench only steps sequentially; a stride of 7919 blocks (prime,
# so coprime with the 2^18 blocks of the volume) scatters the 4 KiB writes
# over the whole volume without repeating a block within 262144 requests.
STRIDE=$((4096 * 7919))

if [ "$(id -u)" -ne 0 ]; then
	echo "run as root: tgtd, and apt-get for missing packages" >&2
	exit 1
fi
need=()
command -v tgtd >/dev/null || need+=(tgt)
command -v iscsi-perf >/dev/null || need+=(libiscsi-bin)
command -v qemu-img >/dev/null || need+=(qemu-utils)
ls /usr/lib/*/qemu/block-iscsi.so >/dev/null 2>&1 || need+=(qemu-block-extra)
if ((${#need[@]})); then
	echo "installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for port in "$TGT_PORT" "$LOCKSTEP_PORT"; do
	if ss -ltn "sport = :$port" | grep -q LISTEN; then
		echo "port $port is in use; set TGT_PORT / LOCKSTEP_PORT" >&2
		exit 1
	fi
done
make -s build
load0=$(cut -d" " -f1-3 /proc/loadavg)

work=$(mktemp -d /tmp/lockstep-bench-iscsi.XXXXXX)
pids=()
cleanup() {
	# tgtd ignores SIGTERM while it serves a target: take it offline,
	# remove the target, then ask it to exit.
	command tgtadm -C "$TGT_PORT" --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
	command tgtadm -C "$TGT_PORT" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
	command tgtadm -C "$TGT_PORT" --op delete --mode system --force >/dev/null 2>&1 || true
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# tgtd: foreground, its own control socket, a sparse 1 GiB file as LUN 1
# (tgt's LUN 0 is its controller).
TGT_IQN=iqn.2026-11.io.lockstep:tgtd-bench
truncate -s 1G "$work/tgt.img"
tgtd -f -C "$TGT_PORT" --iscsi "portal=127.0.0.1:$TGT_PORT" >"$work/tgtd.log" 2>&1 &
pids+=($!)
tgtadm() { command tgtadm -C "$TGT_PORT" --lld iscsi "$@"; }
for _ in $(seq 50); do tgtadm --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm --op new --mode target --tid 1 -T "$TGT_IQN"
tgtadm --op new --mode logicalunit --tid 1 --lun 1 -b "$work/tgt.img" --blocksize 4096
tgtadm --op bind --mode target --tid 1 -I ALL

# lockstep serve with the one-volume policy in scripts/bench.
./bin/lockstep serve --data "$work/lockstep" --policy scripts/bench --iscsi "127.0.0.1:$LOCKSTEP_PORT" >"$work/lockstep.log" 2>&1 &
pids+=($!)

declare -A URL=(
	[tgtd]="iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1"
	[lockstep]="iscsi://127.0.0.1:$LOCKSTEP_PORT/iqn.2026-11.io.lockstep:bench/0"
)
for t in tgtd lockstep; do
	for _ in $(seq 100); do iscsi-inq "${URL[$t]}" >/dev/null 2>&1 && break; sleep 0.1; done
	iscsi-readcapacity16 "${URL[$t]}" | grep -q 'Total size:1073741824' || {
		echo "$t does not serve a 1 GiB LUN at ${URL[$t]}" >&2
		cat "$work/$t.log" >&2
		exit 1
	}
done

# qb COUNT ARGS... runs qemu-img bench and prints requests per second.
qb() {
	local count=$1 out secs
	shift
	out=$(timeout "$STEP_TIMEOUT" qemu-img bench -f raw -c "$count" "$@") || {
		echo "qemu-img bench $* failed: $out" >&2
		return 1
	}
	secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<<"$out")
	awk -v n="$count" -v s="$secs" 'BEGIN { printf "%.0f", n / s }'
}

# rperf ARGS... runs iscsi-perf for PERF_SECONDS and prints its average IOPS.
rperf() {
	local out
	out=$(timeout "$((PERF_SECONDS + 30))" iscsi-perf -t "$PERF_SECONDS" "$@" 2>&1 | tr '\r' '\n') || {
		echo "iscsi-perf $* failed: $out" >&2
		return 1
	}
	grep -o 'iops average [0-9]*' <<<"$out" | tail -1 | awk '{print $3}'
}

# Each measurement runs against tgtd, then Lockstep, back to back, so a
# change in the machine's load hits both alike. Writes come first: the
# 1 MiB pass fills both volumes, so the reads read written data.
declare -A res
rows=(
	"w4k1|4 KiB scattered writes, QD1|IOPS"
	"w4k16|4 KiB scattered writes, QD16|IOPS"
	"wflush|4 KiB writes + flush each, QD1|IOPS"
	"w1m|1 MiB sequential writes, QD4|MiB/s"
	"r1m|1 MiB sequential reads, QD4|MiB/s"
	"r1mp|1 MiB sequential reads, QD4 (iscsi-perf)|MiB/s"
	"r4k|4 KiB random reads, QD16 (iscsi-perf)|IOPS"
)
if [ -n "${ROWS:-}" ]; then
	keep=()
	for row in "${rows[@]}"; do
		[[ " $ROWS " == *" ${row%%|*} "* ]] && keep+=("$row")
	done
	rows=("${keep[@]}")
fi
measure() {
	local key=$1 t=$2 u=${URL[$2]} v
	case $key in
	w4k1) v=$(qb "$COUNT_4K_QD1" -w -s 4096 -d 1 -S "$STRIDE" "$u") ;;
	w4k16) v=$(qb "$COUNT_4K_QD16" -w -s 4096 -d 16 -S "$STRIDE" "$u") ;;
	wflush) v=$(qb "$COUNT_FLUSH" -w -s 4096 -d 1 --flush-interval=1 "$u") ;;
	w1m) v=$(qb 1024 -w -s 1M -d 4 --pattern=90 "$u") ;;
	r1m) v=$(qb 1024 -s 1M -d 4 "$u") ;;
	r1mp) v=$(($(rperf -m 4 -b 256 "$u") * 4096 * 256 / 1048576)) ;;
	r4k) v=$(rperf -m 16 -b 1 -r "$u") ;;
	esac
	res[$key.$t]+="$v "
	echo "  $key $t: $v" >&2
}
# The machine is shared, so each measurement is repeated REPEAT times,
# alternating which target goes first; the table shows the median and the
# range.
for ((r = 1; r <= REPEAT; r++)); do
	echo "round $r of $REPEAT (load average $(cut -d" " -f1-3 /proc/loadavg))" >&2
	for row in "${rows[@]}"; do
		key=${row%%|*}
		if ((r % 2)); then order=(tgtd lockstep); else order=(lockstep tgtd); fi
		for t in "${order[@]}"; do measure "$key" "$t"; done
	done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
range() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "–" hi }'; }

echo
echo "| workload | unit | tgtd | lockstep | lockstep/tgtd |"
echo "|---|---|---:|---:|---:|"
for row in "${rows[@]}"; do
	IFS='|' read -r key label unit <<<"$row"
	a=$(median "${res[$key.tgtd]}")
	b=$(median "${res[$key.lockstep]}")
	awk -v l="$label" -v u="$unit" -v a="$a" -v b="$b" -v ra="$(range "${res[$key.tgtd]}")" -v rb="$(range "${res[$key.lockstep]}")" \
		'BEGIN { printf "| %s | %s | %d (%s) | %d (%s) | %.2f× |\n", l, u, a, ra, b, rb, (a > 0 ? b / a : 0) }'
done
echo
echo "machine: $(nproc) cores, $(uname -r); tgt $(tgtd -V 2>&1 | head -1); $(qemu-img --version | head -1); load average at start: $load0, at end: $(cut -d" " -f1-3 /proc/loadavg)"
