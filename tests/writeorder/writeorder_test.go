// Package writeorder proves write-order fidelity across the volumes of a
// service over iSCSI: dependent writes (A on one volume, acknowledged, then
// B on another, then C on a third) never appear in a marker's cut out of
// order, while markers are taken many times a second.
package writeorder

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/iscsi/iscsitest"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/marker"
	"github.com/lockstep-io/lockstep/policies/model"
)

const (
	bs      = 4096
	nvol    = 3
	writers = 4 // independent chains; chain w uses block w of every volume
)

// chain is one writer's progress, per volume: the newest sequence number
// about to be issued and the newest acknowledged.
type chain struct {
	issued [nvol]atomic.Uint64
	acked  [nvol]atomic.Uint64
}

func payload(seq uint64, w, vol int) []byte {
	p := make([]byte, bs)
	binary.BigEndian.PutUint64(p, seq)
	p[8], p[9] = byte(w), byte(vol)
	for i := 16; i < bs; i++ {
		p[i] = byte(seq) ^ byte(i)
	}
	return p
}

func parse(t *testing.T, p []byte, w, vol int) uint64 {
	t.Helper()
	seq := binary.BigEndian.Uint64(p)
	if seq == 0 {
		return 0
	}
	if p[8] != byte(w) || p[9] != byte(vol) {
		t.Fatalf("block of writer %d on volume %d holds writer %d volume %d", w, vol, p[8], p[9])
	}
	for i := 16; i < bs; i++ {
		if p[i] != byte(seq)^byte(i) {
			t.Fatalf("block of writer %d on volume %d, seq %d: torn at byte %d", w, vol, seq, i)
		}
	}
	return seq
}

func TestWriteOrderAcrossVolumes(t *testing.T) {
	markers := 1000
	if s := os.Getenv("WRITEORDER_MARKERS"); s != "" {
		markers, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		markers = 100
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	srv := iscsi.NewServer(iscsi.ServerConfig{})
	svc := &model.Service{Name: "svc", Consistency: model.Consistency{QuiesceTimeout: time.Second}}
	vols := make([]*store.Volume, nvol)
	for i := range vols {
		name := fmt.Sprintf("vol%d", i+1)
		if vols[i], err = st.CreateVolume(ctx, store.VolumeSpec{Name: name, Size: 1 << 20, BlockSize: bs}); err != nil {
			t.Fatal(err)
		}
		svc.Volumes = append(svc.Volumes, &model.Volume{Name: name, Size: 1 << 20, BlockSize: bs})
		if err := srv.AddTarget(iscsi.TargetConfig{IQN: "iqn.2026-11.io.lockstep:wo." + name, LUNs: []iscsi.LUNConfig{{Device: vols[i]}}}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	// One session per volume, as a host with three iSCSI disks has.
	inits := make([]*iscsitest.Initiator, nvol)
	for i := range inits {
		in, err := iscsitest.Dial(ctx, l.Addr().String(), iscsitest.LoginOptions{
			InitiatorName: "iqn.2026-11.io.lockstep:writeorder", TargetName: fmt.Sprintf("iqn.2026-11.io.lockstep:wo.vol%d", i+1), ImmediateData: true})
		if err != nil {
			t.Fatal(err)
		}
		in.BlockSize = bs
		inits[i] = in
		t.Cleanup(func() { in.Close() })
	}

	// Writers: A on vol1, acknowledged, then B on vol2, then C on vol3.
	chains := make([]*chain, writers)
	var stop atomic.Bool
	var wg sync.WaitGroup
	werr := make(chan error, writers)
	for w := range chains {
		c := &chain{}
		chains[w] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); !stop.Load(); seq++ {
				for v := 0; v < nvol; v++ {
					c.issued[v].Store(seq)
					if err := inits[v].Write10(ctx, 0, uint32(w), payload(seq, w, v), false); err != nil {
						werr <- fmt.Errorf("writer %d seq %d volume %d: %w", w, seq, v+1, err)
						return
					}
					c.acked[v].Store(seq)
				}
			}
		}()
	}

	// Markers through the protocol runner (no apps: crash-consistent, the
	// fence is what is under test), as fast as they come, with the
	// writers' progress just before each Mark call and just after it
	// returned.
	type bounds struct {
		lo, hi [writers][nvol]uint64
	}
	run := &marker.Runner{Fence: st}
	var ms []catalog.Marker
	var cutBounds []bounds
	start := time.Now()
	for i := 0; i < markers; i++ {
		var b bounds
		for w, c := range chains {
			for v := 0; v < nvol; v++ {
				b.lo[w][v] = c.acked[v].Load()
			}
		}
		m, err := run.Run(ctx, svc, catalog.TriggerSchedule)
		if err != nil {
			t.Fatal(err)
		}
		for w, c := range chains {
			for v := 0; v < nvol; v++ {
				b.hi[w][v] = c.issued[v].Load()
			}
		}
		ms, cutBounds = append(ms, m), append(cutBounds, b)
		select {
		case err := <-werr:
			t.Fatal(err)
		default:
		}
	}
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()
	close(werr)
	for err := range werr {
		t.Fatal(err)
	}

	// Every cut: A >= B >= C per chain (no B without its A), everything
	// acknowledged before Mark was called is in, nothing issued after it
	// returned is.
	between, nonEmpty := 0, 0
	buf := make([]byte, bs)
	for i, m := range ms {
		jm, ok := st.Marker(m.ID)
		if !ok {
			t.Fatalf("marker %s not in the journal", m.ID)
		}
		for w := 0; w < writers; w++ {
			var seq [nvol]uint64
			for v := 0; v < nvol; v++ {
				if err := vols[v].ReadAtTime(ctx, buf, int64(w)*bs, jm.TS); err != nil {
					t.Fatal(err)
				}
				seq[v] = parse(t, buf, w, v)
			}
			if err := checkCut(seq[:], cutBounds[i].lo[w][:], cutBounds[i].hi[w][:]); err != nil {
				t.Fatalf("marker %d (%s), writer %d: %v", i, m.ID, w, err)
			}
			if seq[nvol-1] > 0 {
				nonEmpty++
			}
			if seq[0] != seq[nvol-1] {
				between++
			}
		}
	}
	t.Logf("%d markers in %s (%.0f/s); %d chain cuts checked, %d non-empty, %d fell between dependent writes",
		len(ms), elapsed.Round(time.Millisecond), float64(len(ms))/elapsed.Seconds(), len(ms)*writers, nonEmpty, between)
	if float64(len(ms))/elapsed.Seconds() < 10 {
		t.Errorf("only %.1f markers/s", float64(len(ms))/elapsed.Seconds())
	}
	if between == 0 {
		t.Errorf("no cut fell between two dependent writes: the test did not exercise the fence")
	}
}

// checkCut checks one chain's cut: seq[v] is the sequence number volume v
// holds at the marker, lo[v] the newest acknowledged before Mark was called,
// hi[v] the newest issued when it returned. Volume v's write n is issued only
// after volume v-1's write n was acknowledged.
func checkCut(seq, lo, hi []uint64) error {
	for v := range seq {
		if seq[v] < lo[v] {
			return fmt.Errorf("volume %d holds seq %d, but seq %d was acknowledged before the marker", v+1, seq[v], lo[v])
		}
		if seq[v] > hi[v] {
			return fmt.Errorf("volume %d holds seq %d, issued after the marker (newest issued by then: %d)", v+1, seq[v], hi[v])
		}
		if v > 0 && seq[v] > seq[v-1] {
			return fmt.Errorf("volume %d holds seq %d but volume %d only %d: a dependent write without the write it depends on", v+1, seq[v], v, seq[v-1])
		}
	}
	return nil
}

// TestCheckCutCatchesViolations: the checker is not vacuous.
func TestCheckCutCatchesViolations(t *testing.T) {
	hi := []uint64{100, 100, 100}
	for _, tc := range []struct {
		seq, lo []uint64
		bad     bool
	}{
		{[]uint64{7, 7, 6}, []uint64{7, 6, 6}, false},
		{[]uint64{7, 8, 6}, []uint64{0, 0, 0}, true},   // B without A
		{[]uint64{7, 7, 8}, []uint64{0, 0, 0}, true},   // C without B
		{[]uint64{7, 6, 6}, []uint64{8, 0, 0}, true},   // acknowledged write missing
		{[]uint64{101, 6, 6}, []uint64{0, 0, 0}, true}, // a later write inside the cut
	} {
		if err := checkCut(tc.seq, tc.lo, hi); (err != nil) != tc.bad {
			t.Errorf("checkCut(%v, lo %v) = %v, want violation %v", tc.seq, tc.lo, err, tc.bad)
		}
	}
}
