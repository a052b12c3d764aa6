package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/retention"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Markers chosen by the keep rules stay restorable after the window passes
// them, the others expire, and the journal shrinks.
func TestFoldServiceKeepsRuleMarkers(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	s, err := Open(ctx, "/d", Options{FS: vfs.NewCrashFS(), Clock: clk, SegmentSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, _ := s.CreateVolume(ctx, VolumeSpec{Name: "db", Size: 8 * 4096, BlockSize: 4096})
	type snap struct {
		m   *Marker
		img []byte
	}
	var snaps []snap
	img := make([]byte, 8*4096)
	for h := 0; h < 96; h++ { // four days, a marker every hour
		for i := 0; i < 3; i++ {
			blk := (h*3 + i) % 8
			data := bytes.Repeat([]byte{byte(h), byte(i)}, 2048)
			if err := v.WriteAt(ctx, data, int64(blk)*4096, false); err != nil {
				t.Fatal(err)
			}
			copy(img[blk*4096:], data)
		}
		m, err := s.Mark(ctx, MarkSpec{Service: "erp", Class: ClassApp, Volumes: []string{"db"}})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, snap{m, append([]byte(nil), img...)})
		clk.Advance(time.Hour)
	}
	before := len(s.Journal().Segments())
	_, d, err := s.FoldService(ctx, "erp", []string{"db"}, clk.Now(), retention.Policy{Window: 12 * time.Hour, KeepDaily: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Markers run Nov 1 00:00 .. Nov 4 23:00; the window starts Nov 4 12:00.
	// keep_daily=3 picks the newest marker of Nov 4, 3 and 2; Nov 4's is
	// inside the window, so two are kept beyond it.
	if len(d.Keep) != 2 {
		t.Fatalf("kept %d markers beyond the window, want 2: %+v", len(d.Keep), d.Keep)
	}
	kept := map[string]bool{}
	for _, k := range d.Keep {
		kept[k.ID] = true
	}
	if len(kept) == 0 || len(d.Expire) == 0 {
		t.Fatalf("expected some markers kept and some expired: keep %d expire %d", len(d.Keep), len(d.Expire))
	}
	for _, sn := range snaps {
		got := make([]byte, len(img))
		err := v.ReadAtTime(ctx, got, 0, sn.m.TS)
		switch {
		case sn.m.TS > d.Through || kept[sn.m.ID]:
			if err != nil || !bytes.Equal(got, sn.img) {
				t.Fatalf("marker %s (kept=%v) not restorable after fold: %v", sn.m.ID, kept[sn.m.ID], err)
			}
		default:
			if !errors.Is(err, ErrOutOfWindow) {
				t.Fatalf("expired marker %s still readable: %v", sn.m.ID, err)
			}
			if _, ok := s.Marker(sn.m.ID); ok {
				t.Fatalf("expired marker %s still listed", sn.m.ID)
			}
		}
	}
	if after := len(s.Journal().Segments()); after >= before {
		t.Fatalf("fold removed no journal segment: %d before, %d after", before, after)
	}
}
