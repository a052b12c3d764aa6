// Package iscsiconf runs libiscsi's conformance suite against the iSCSI
// target serving a journaled store volume, the device it serves in
// production, rather than the in-memory disk of engine/iscsi's own run.
package iscsiconf

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/cunit"
	"github.com/lockstep-io/lockstep/internal/syncbuf"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

const (
	iqn = "iqn.2026-01.io.lockstep:journal"
	// The same LUN geometry as engine/iscsi's TestLibiscsiConformance, so
	// the same expected results apply.
	volSize   = 128 << 20
	blockSize = 512
	// expectedFile is engine/iscsi's list: the journaled volume must answer
	// every test exactly as the in-memory disk does.
	expectedFile = "../../engine/iscsi/testdata/iscsi-test-cu-ALL.expected"
)

func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// pattern is the content written before the run, one byte per 512-byte
// block so that a block read from the wrong place shows.
func pattern(off, n int64) []byte {
	p := make([]byte, n)
	for i := range p {
		blk := (off + int64(i)) / blockSize
		p[i] = byte(blk*7+blk>>8) | 1
	}
	return p
}

// patternRanges cover both ends of the LUN, where the suites write most,
// and spots in between.
func patternRanges() [][2]int64 {
	var r [][2]int64
	for off := int64(0); off < volSize; off += 16 << 20 {
		r = append(r, [2]int64{off, 1 << 20})
	}
	return append(r, [2]int64{volSize - 1<<20, 1 << 20})
}

func TestLibiscsiConformanceJournaled(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance run skipped in -short mode")
	}
	cu := testenv.LookPath(t, "iscsi-test-cu")
	inq := testenv.LookPath(t, "iscsi-inq")
	stdbuf := testenv.LookPath(t, "stdbuf")
	ctx := context.Background()
	dir := t.TempDir()

	s, err := store.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	storeOpen := true
	t.Cleanup(func() {
		if storeOpen {
			s.Close()
		}
	})
	vol, err := s.CreateVolume(ctx, store.VolumeSpec{Name: "conformance", Size: volSize, BlockSize: blockSize})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range patternRanges() {
		if err := vol.WriteAt(ctx, pattern(r[0], r[1]), r[0], false); err != nil {
			t.Fatal(err)
		}
	}
	if err := vol.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.Journal().LastTS()
	// The read-only LUN is a point-in-time view of the same volume.
	view, err := vol.View(ctx, before)
	if err != nil {
		t.Fatal(err)
	}

	logs := &syncbuf.Buffer{}
	srv := iscsi.NewServer(iscsi.ServerConfig{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	for _, tc := range []iscsi.TargetConfig{
		{IQN: iqn, LUNs: []iscsi.LUNConfig{{Device: vol}}},
		{IQN: iqn + "-ro", LUNs: []iscsi.LUNConfig{{Device: view}}},
	} {
		if err := srv.AddTarget(tc); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A second portal gives the MultipathIO suite its second path.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ctx, l) }()
	go func() { served <- srv.Serve(ctx, l2) }()
	srvOpen := true
	stopServer := func() {
		if srvOpen {
			srvOpen = false
			srv.Close()
			for range 2 {
				if err := <-served; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}
		}
	}
	t.Cleanup(stopServer)
	url := "iscsi://" + l.Addr().String() + "/" + iqn + "/0"
	path2 := "iscsi://" + l2.Addr().String() + "/" + iqn + "/0"

	list, err := run(30*time.Second, cu, "-l")
	if err != nil {
		t.Fatalf("iscsi-test-cu -l: %v\n%s", err, list)
	}
	suites := cunit.Suites(list, "ALL")
	if len(suites) < 40 {
		t.Fatalf("only %d suites in the ALL family:\n%s", len(suites), list)
	}

	got := map[string]string{}
	var pass, skip, fail int
	record := func(key, suite, out string) {
		res := cunit.Parse(out)
		if len(res) == 0 {
			t.Errorf("suite %s: no test results parsed:\n%s", suite, out)
		}
		for name, r := range res {
			got[key+name] = r
			switch r {
			case "pass":
				pass++
			case "skip":
				skip++
			default:
				fail++
				t.Logf("suite %s test %s failed:\n%s", suite, name, out)
			}
		}
	}
	for _, suite := range suites {
		out, err := run(5*time.Minute, stdbuf, cunit.SuiteArgs(cu, suite, url, path2)...)
		if err != nil {
			t.Errorf("suite %s: iscsi-test-cu: %v", suite, err)
		}
		record("ALL."+suite+".", suite, out)
		// The target must survive every suite: a fresh login still works.
		if out, err := run(30*time.Second, inq, url); err != nil || !strings.Contains(out, "Vendor:LOCKSTEP") {
			t.Fatalf("target did not survive suite %s: %v\n%s", suite, err, out)
		}
	}
	out, err := run(5*time.Minute, stdbuf, "-o0", "-e0", cu, "--dataloss", "--verbose", "--test=ALL.ReadOnly", "iscsi://"+l.Addr().String()+"/"+iqn+"-ro/0")
	if err != nil {
		t.Errorf("read-only LUN: iscsi-test-cu: %v", err)
	}
	record("read-only-lun:ALL.ReadOnly.", "ReadOnly (view)", out)
	t.Logf("iscsi-test-cu ALL family on a journaled volume: %d tests, %d pass, %d skip, %d fail", len(got), pass, skip, fail)

	want := readExpected(t, expectedFile)
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: expected %s, test did not run", k, w)
		} else if g != w {
			t.Errorf("%s: got %s, expected %s", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: got %s, not in %s", k, g, expectedFile)
		}
	}

	stopServer()
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("the target recovered from a panic during the run:\n%s", logs.String())
	}
	view.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("closing the store: %v", err)
	}
	storeOpen = false

	// Everything the suites wrote is in a journal that verifies clean...
	rep, err := journal.Verify(ctx, nil, filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatalf("journal.Verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("journal damaged after the conformance run: %+v", rep.Damage)
	}
	t.Logf("journal: %d segments, %d records", rep.Segments, rep.Records)

	// ...and replays: after reopening, the volume still reads as it did
	// before the run at the earlier timestamp, while its current content
	// shows the suites' writes.
	s, err = store.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatalf("reopening the store: %v", err)
	}
	storeOpen = true
	vol, err = s.Volume("conformance")
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	for _, r := range patternRanges() {
		want := pattern(r[0], r[1])
		buf := make([]byte, r[1])
		if err := vol.ReadAtTime(ctx, buf, r[0], before); err != nil {
			t.Fatalf("read at %d, offset %d: %v", before, r[0], err)
		}
		if !bytes.Equal(buf, want) {
			t.Errorf("offset %d: content at the pre-run timestamp differs from the pattern written then", r[0])
		}
		if err := vol.ReadAt(ctx, buf, r[0]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want) {
			changed++
		}
	}
	if changed == 0 {
		t.Error("no patterned range changed: the suites' writes did not reach the volume")
	}
}

func readExpected(t *testing.T, path string) map[string]string {
	t.Helper()
	want, err := cunit.ReadExpected(path)
	if err != nil {
		t.Fatal(err)
	}
	return want
}
