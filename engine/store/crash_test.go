package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

var crashPoints = flag.Int("crash.points", 200, "SIGKILL crash points in TestCrashSIGKILL")

// The crash workload is a deterministic sequence of operations, so the
// checker can regenerate what every write wrote.
var crashVols = []VolumeSpec{
	{Name: "db", Size: 256 * 512, BlockSize: 512},
	{Name: "wal", Size: 64 * 4096, BlockSize: 4096},
	{Name: "files", Size: 128 * 512, BlockSize: 512},
}

type crashOp struct {
	kind   byte // 'w' write, 'f' flush, 'm' marker, 'z' fold
	vol    int
	block  int
	blocks int
	fua    bool
	k      int // write number (1-based) for writes; writes before it for markers
}

func crashOps(seed uint64, n int) []crashOp {
	rng := rand.New(rand.NewPCG(seed, 99))
	var ops []crashOp
	writes := 0
	for len(ops) < n {
		switch r := rng.IntN(100); {
		case r < 80:
			vi := rng.IntN(len(crashVols))
			nb := int(crashVols[vi].Size) / crashVols[vi].BlockSize
			b := rng.IntN(nb)
			writes++
			ops = append(ops, crashOp{kind: 'w', vol: vi, block: b, blocks: 1 + rng.IntN(min(16, nb-b)), fua: rng.IntN(10) == 0, k: writes})
		case r < 90:
			ops = append(ops, crashOp{kind: 'f'})
		case r < 98:
			ops = append(ops, crashOp{kind: 'm', k: writes})
		default:
			ops = append(ops, crashOp{kind: 'z', k: writes})
		}
	}
	return ops
}

// crashData is what write k puts in each of its blocks: the write number in
// the first 8 bytes, then a pattern that depends on k and the block.
func crashData(op crashOp, bs int) []byte {
	p := make([]byte, op.blocks*bs)
	for i := 0; i < op.blocks; i++ {
		b := p[i*bs : (i+1)*bs]
		binary.LittleEndian.PutUint64(b, uint64(op.k))
		for j := 8; j < bs; j++ {
			b[j] = byte(op.k*31 + (op.block+i)*7 + j)
		}
	}
	return p
}

// runCrashWorkload executes ops, reporting each acknowledged step: "F k"
// (writes 1..k durable), "M k" (marker after write k returned).
func runCrashWorkload(ctx context.Context, s *Store, ops []crashOp, report func(string)) error {
	vols := make([]*Volume, len(crashVols))
	for i, spec := range crashVols {
		v, err := s.Volume(spec.Name)
		if err != nil {
			return err
		}
		vols[i] = v
	}
	writes := 0
	var marks []int64
	for _, op := range ops {
		switch op.kind {
		case 'w':
			v := vols[op.vol]
			if err := v.WriteAt(ctx, crashData(op, v.bs), int64(op.block*v.bs), op.fua); err != nil {
				return err
			}
			writes = op.k
			if op.fua {
				report(fmt.Sprintf("F %d", writes))
			}
		case 'f':
			if err := s.Sync(ctx); err != nil {
				return err
			}
			report(fmt.Sprintf("F %d", writes))
		case 'm':
			m, err := s.Mark(ctx, MarkSpec{ID: fmt.Sprintf("mk-%d-%d", op.k, len(marks)), Service: "crash", Class: ClassApp, Volumes: []string{"db", "wal", "files"}})
			if err != nil {
				return err
			}
			marks = append(marks, m.TS)
			report(fmt.Sprintf("M %d", op.k))
			report(fmt.Sprintf("F %d", writes))
		case 'z':
			// Fold through the second newest marker, keeping every other
			// older one.
			if len(marks) < 2 {
				continue
			}
			through := marks[len(marks)-2]
			var keep []int64
			for i, ts := range marks[:len(marks)-2] {
				if i%2 == 0 {
					keep = append(keep, ts)
				}
			}
			plans := map[string]FoldPlan{}
			for _, spec := range crashVols {
				plans[spec.Name] = FoldPlan{Through: through, Keep: keep}
			}
			if _, err := s.Fold(ctx, plans); err != nil {
				return err
			}
		}
	}
	return nil
}

func replayCrash(ops []crashOp, upto int) [][]byte {
	imgs := make([][]byte, len(crashVols))
	for i, spec := range crashVols {
		imgs[i] = make([]byte, spec.Size)
	}
	for _, op := range ops {
		if op.kind != 'w' || op.k > upto {
			continue
		}
		bs := crashVols[op.vol].BlockSize
		copy(imgs[op.vol][op.block*bs:], crashData(op, bs))
	}
	return imgs
}

// verifyCrash opens what survived and checks the durability contract.
func verifyCrash(t *testing.T, fsys vfs.FS, dir string, ops []crashOp, durable int, marksReturned []int) (survived int) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, dir, Options{FS: fsys, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatalf("open after crash needs manual repair: %v", err)
	}
	defer s.Close()
	cur := make([][]byte, len(crashVols))
	last := 0
	for i, spec := range crashVols {
		v, err := s.Volume(spec.Name)
		if err != nil {
			t.Fatalf("volume %q lost: %v", spec.Name, err)
		}
		cur[i] = make([]byte, spec.Size)
		if err := v.ReadAt(ctx, cur[i], 0); err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(cur[i]); off += spec.BlockSize {
			last = max(last, int(binary.LittleEndian.Uint64(cur[i][off:])))
		}
	}
	if last < durable {
		t.Fatalf("durable writes lost: writes 1..%d were flushed, only 1..%d survived", durable, last)
	}
	want := replayCrash(ops, last)
	for i, spec := range crashVols {
		if !bytes.Equal(cur[i], want[i]) {
			for off := 0; off < len(cur[i]); off += spec.BlockSize {
				if !bytes.Equal(cur[i][off:off+spec.BlockSize], want[i][off:off+spec.BlockSize]) {
					t.Logf("volume %q block %d holds write %d, want write %d", spec.Name, off/spec.BlockSize,
						binary.LittleEndian.Uint64(cur[i][off:]), binary.LittleEndian.Uint64(want[i][off:]))
				}
			}
			t.Fatalf("volume %q is not the state after writes 1..%d: the survivors are not a prefix of the write order", spec.Name, last)
		}
	}
	have := map[int]bool{}
	for _, m := range s.Markers("crash") {
		k, _ := strconv.Atoi(strings.Split(m.ID, "-")[1])
		have[k] = true
		if k > last {
			t.Fatalf("marker %s after write %d survived but write %d did not", m.ID, k, last)
		}
		img := replayCrash(ops, k)
		for i, spec := range crashVols {
			v, _ := s.Volume(spec.Name)
			if !v.readable(m.TS) {
				continue
			}
			got := make([]byte, spec.Size)
			if err := v.ReadAtTime(ctx, got, 0, m.TS); err != nil {
				t.Fatalf("marker %s on %q: %v", m.ID, spec.Name, err)
			}
			if !bytes.Equal(got, img[i]) {
				t.Fatalf("marker %s: volume %q at the marker is not the state after write %d", m.ID, spec.Name, k)
			}
		}
	}
	// The workload's folds keep every even-numbered marker, so each of
	// those that was acknowledged must be there.
	for j, k := range marksReturned {
		if j%2 == 0 && !have[k] {
			t.Fatalf("marker #%d (after write %d) was acknowledged and lost", j, k)
		}
	}
	rep, err := journal.Verify(ctx, fsys, path.Join(dir, "wal"))
	if err != nil || !rep.OK() {
		t.Fatalf("journal damaged after recovery: %v %v", err, rep.Damage)
	}
	return last
}

func createCrashVolumes(t testing.TB, s *Store) {
	for _, spec := range crashVols {
		if _, err := s.CreateVolume(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCrashChild is the workload process of TestCrashSIGKILL.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("LOCKSTEP_CRASH_DIR")
	if dir == "" {
		t.Skip("child process of TestCrashSIGKILL")
	}
	seed, _ := strconv.ParseUint(os.Getenv("LOCKSTEP_CRASH_SEED"), 10, 64)
	s, err := Open(context.Background(), dir, Options{SegmentSize: 64 << 10})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	createCrashVolumes(t, s)
	ops := crashOps(seed, 20000)
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "READY")
	out.Flush()
	err = runCrashWorkload(context.Background(), s, ops, func(line string) {
		fmt.Fprintln(out, line)
		out.Flush()
	})
	fmt.Println("ERR", err)
	os.Exit(3)
}

// TestCrashSIGKILL kills a writing process at random moments and checks what
// survives. SIGKILL keeps the page cache; TestCrashPowerLoss covers losing it.
func TestCrashSIGKILL(t *testing.T) {
	points := *crashPoints
	if testing.Short() || raceEnabled {
		points = 25
	}
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	totalSurvived := 0
	for i := 0; i < points; i++ {
		seed := rng.Uint64() % 1000
		dir := path.Join(root, fmt.Sprint(i))
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), "LOCKSTEP_CRASH_DIR="+dir, fmt.Sprintf("LOCKSTEP_CRASH_SEED=%d", seed))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		durable, marks := 0, []int(nil)
		parse := func(l string) {
			var k int
			if _, err := fmt.Sscanf(l, "F %d", &k); err == nil {
				durable = max(durable, k)
			} else if _, err := fmt.Sscanf(l, "M %d", &k); err == nil {
				marks = append(marks, k)
			} else if strings.HasPrefix(l, "ERR") {
				t.Errorf("child failed: %s", l)
			}
		}
		// Start the kill timer at the child's first acknowledged step, so
		// the cut lands inside the workload whatever the machine's speed.
		started := false
		timeout := time.After(60 * time.Second)
		for !started {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before it started: %v", cmd.Wait())
				}
				parse(l)
				started = strings.HasPrefix(l, "F ") || strings.HasPrefix(l, "M ")
			case <-timeout:
				cmd.Process.Kill()
				t.Fatal("child never acknowledged a write")
			}
		}
		kill := time.After(time.Duration(5+rng.IntN(150)) * time.Millisecond)
	run:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break run
				}
				parse(l)
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			}
		}
		cmd.Wait()
		ops := crashOps(seed, 20000)
		totalSurvived += verifyCrash(t, vfs.OS{}, dir, ops, durable, marks)
		os.RemoveAll(dir)
		if t.Failed() {
			t.Fatalf("crash point %d (seed %d) failed", i, seed)
		}
	}
	if totalSurvived == 0 {
		t.Fatal("no write ever survived: the child never got to write before the kill")
	}
	t.Logf("%d crash points, %d writes survived in total", points, totalSurvived)
}

// TestCrashPowerLoss runs the workload on a file system that, at a random
// operation, loses everything not yet synced (and, in some runs, keeps a
// random part of it or tears the tail), then checks what survives.
func TestCrashPowerLoss(t *testing.T) {
	points := *crashPoints
	if testing.Short() || raceEnabled {
		points = 30
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	probed := map[uint64]int{}
	for i := 0; i < points; i++ {
		seed := rng.Uint64() % 40
		ops := crashOps(seed, 400)
		fsys := vfs.NewCrashFS()
		s, err := Open(context.Background(), "/d", Options{FS: fsys, SegmentSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		createCrashVolumes(t, s)
		base := fsys.Ops()
		// Count the workload's operations once per seed to place the cut
		// inside it.
		total, ok := probed[seed]
		if !ok {
			probe := vfs.NewCrashFS()
			ps, _ := Open(context.Background(), "/d", Options{FS: probe, SegmentSize: 64 << 10})
			createCrashVolumes(t, ps)
			pbase := probe.Ops()
			runCrashWorkload(context.Background(), ps, ops, func(string) {})
			total = probe.Ops() - pbase
			ps.Close()
			probed[seed] = total
		}
		fsys.SetCrashPoint(base + 1 + rng.IntN(max(total, 1)))
		durable, marks := 0, []int(nil)
		runCrashWorkload(context.Background(), s, ops, func(l string) {
			var k int
			if _, err := fmt.Sscanf(l, "F %d", &k); err == nil {
				durable = max(durable, k)
			} else if _, err := fmt.Sscanf(l, "M %d", &k); err == nil {
				marks = append(marks, k)
			}
		})
		s.Close() // fails on the crashed file system; stops background work
		opts := vfs.CrashOptions{Rand: rand.New(rand.NewPCG(seed, uint64(i)))}
		switch i % 3 {
		case 1:
			opts.KeepUnsyncedProb = 0.5
		case 2:
			opts.KeepUnsyncedProb, opts.TornTail = 0.3, true
		}
		survivor := fsys.Crash(opts)
		t.Logf("power-loss point %d: seed %d, cut after op %d of %d, keep %.1f torn %v", i, seed, fsys.Ops(), total, opts.KeepUnsyncedProb, opts.TornTail)
		verifyCrash(t, survivor, "/d", ops, durable, marks)
		if t.Failed() {
			t.Fatalf("power-loss point %d (seed %d, options %+v) failed", i, seed, opts)
		}
	}
}
