package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

const foldHCL = `service "shop" {
  volume "db" {
    size        = "1MiB"
    block_size  = 4096
    target_name = "iqn.2026-11.io.lockstep:fold.db"
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "1h"
  }
  retention {
    journal    = "2h"
    keep_daily = 2
  }
}
`

// newFoldDaemon opens a daemon on a fake clock with a small journal
// segment, without serving: the test drives folds itself.
func newFoldDaemon(t *testing.T, clk clock.Clock) *Daemon {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), Policy: policy(foldHCL), ISCSIAddr: "127.0.0.1:0", Listen: "127.0.0.1:0",
		Clock: clk, FoldInterval: -1, StoreOptions: store.Options{SegmentSize: 32 << 10}}
	d, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func walBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(filepath.Join(dir, "wal"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func readAll(t *testing.T, dev interface {
	ReadAt(context.Context, []byte, int64) error
	Size() int64
}) []byte {
	t.Helper()
	b := make([]byte, dev.Size())
	if err := dev.ReadAt(context.Background(), b, 0); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// Twelve simulated hours of writes and hourly markers, an exposure, a
// writable clone written every hour, an in-place restore, and a fold held
// off by a restore; then one fold: the journal shrinks, the keep rules'
// marker, the undo point and the exposure stay readable byte for byte, the
// other markers beyond the window expire in the catalog with events, and
// the clone pins no segment.
func TestRetentionFold(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 11, 20, 18, 0, 0, 0, time.UTC))
	d := newFoldDaemon(t, clk)
	db, err := d.st.Volume("shop/db")
	if err != nil {
		t.Fatal(err)
	}
	const bs = 4096
	img := make([]byte, db.Size())
	type point struct {
		id  string
		ts  int64
		img []byte
	}
	var marks []point
	var view *store.View
	var viewImg []byte
	var clone *store.Volume
	var cloneImg []byte // what the clone must read now
	var undoImg []byte
	var rec *restore.Record
	for h := 0; h < 12; h++ {
		if h == 8 {
			// Restore in place to the marker of h=6 (02:00 on day two); its
			// undo point must outlive the window.
			undoImg = slices.Clone(img)
			line := d.holding(ctx, "shop", "test restore", func() api.RestoreLine {
				r, err := d.rs.r.Restore(ctx, "shop", restore.Target{Marker: marks[6].id}, nil)
				return recordLine(r, err)
			})
			if line.Error != "" || line.Record == nil || line.Record.UndoPoint == 0 {
				t.Fatalf("restore: %+v", line)
			}
			rec = line.Record
			img = slices.Clone(marks[6].img)
			clk.Advance(time.Minute)
		}
		for i := 0; i < 4; i++ {
			blk := (h*4 + i) % 48
			data := bytes.Repeat([]byte{byte(h + 1), byte(i + 1)}, bs/2)
			if err := db.WriteAt(ctx, data, int64(blk)*bs, false); err != nil {
				t.Fatal(err)
			}
			copy(img[blk*bs:], data)
			if clone != nil {
				if err := clone.WriteAt(ctx, data, int64(blk)*bs, false); err != nil {
					t.Fatal(err)
				}
				copy(cloneImg[blk*bs:], data)
			}
		}
		clk.Advance(time.Minute)
		if h == 1 {
			// A read-only exposure at a time that is no marker.
			e, err := d.Expose(ctx, api.ExposeRequest{Volume: "shop/db", At: clk.Now().Format(time.RFC3339Nano)})
			if err != nil {
				t.Fatal(err)
			}
			d.mu.Lock()
			view = d.exposed[e.IQN].view
			d.mu.Unlock()
			viewImg = slices.Clone(img)
			c, err := d.Expose(ctx, api.ExposeRequest{Volume: "shop/db", Marker: marks[0].id, Writable: true})
			if err != nil {
				t.Fatal(err)
			}
			if clone, err = d.st.Volume(c.Clone); err != nil {
				t.Fatal(err)
			}
			cloneImg = slices.Clone(marks[0].img)
		}
		if h == 3 {
			// A fold while a restore holds the service skips it, with an
			// event, and folds the rest.
			d.holding(ctx, "shop", "test hold", func() api.RestoreLine {
				res, err := d.Fold(ctx, "")
				if err != nil || len(res.Services) != 1 || !strings.Contains(res.Services[0].Skipped, "restore") || res.Unprotected == nil {
					t.Errorf("fold while held: %v %+v", err, res)
				}
				return api.RestoreLine{}
			})
		}
		m, err := d.prot.Mark(ctx, "shop")
		if err != nil {
			t.Fatalf("mark at hour %d: %v", h, err)
		}
		marks = append(marks, point{m.ID, m.Time.UnixNano(), slices.Clone(img)})
		clk.Advance(59 * time.Minute)
	}
	events, err := d.prot.Events(ctx, catalog.EventFilter{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, e := range events {
		if e.Type == EventRetentionFold && e.Severity == catalog.Warning && strings.Contains(e.Message, "skipped") {
			skipped++
		}
	}
	if skipped != 1 {
		t.Fatalf("%d skipped-fold events, want 1: %+v", skipped, events)
	}

	before, segsBefore := walBytes(t, d.cfg.DataDir), len(d.st.Journal().Segments())
	res, err := d.Fold(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	after := walBytes(t, d.cfg.DataDir)
	// now is 06:00 on day two; the 2h window starts at 04:00. Markers run
	// 18:01 .. 05:01; keep_daily=2 keeps the newest of day one (23:01) and
	// of day two (05:01, inside the window). The clone pins the marker it
	// was made from (18:01): 8 of the 10 beyond the window go.
	sf := res.Services[0]
	through := clk.Now().Add(-2 * time.Hour)
	if sf.Error != "" || sf.Skipped != "" || !sf.WindowStart.Equal(through) {
		t.Fatalf("fold: %+v (want window start %s)", sf, through)
	}
	if !slices.Equal(sf.Kept, []string{marks[5].id}) || len(sf.MarkersExpired) != 8 {
		t.Fatalf("kept %v expired %v, want kept [%s] and 8 expired", sf.Kept, sf.MarkersExpired, marks[5].id)
	}
	if sf.UndoPoint.UnixNano() != rec.UndoPoint {
		t.Fatalf("undo point kept %v, want %d", sf.UndoPoint, rec.UndoPoint)
	}
	if res.SegmentsRemoved == 0 || after >= before || len(d.st.Journal().Segments()) >= segsBefore || res.JournalBytes >= before {
		t.Fatalf("journal did not shrink: %d segments removed, wal %d -> %d bytes, %d -> %d segments",
			res.SegmentsRemoved, before, after, segsBefore, len(d.st.Journal().Segments()))
	}
	// The clone was written every hour since 19:00: had it not been folded
	// too, its first segment would still be here.
	for _, seg := range d.st.Journal().Segments() {
		if !seg.Active && seg.LastSeq != 0 && seg.LastTS <= through.UnixNano() {
			t.Fatalf("segment %d (last record %s) is entirely before the window and was kept", seg.Num, time.Unix(0, seg.LastTS).UTC())
		}
	}

	// Folding the clone through now kept its content: the marker it was
	// made from plus every write since.
	gotClone := make([]byte, len(cloneImg))
	if err := clone.ReadAt(ctx, gotClone, 0); err != nil || !bytes.Equal(gotClone, cloneImg) {
		t.Fatalf("the clone after the fold: %v, same bytes %v", err, bytes.Equal(gotClone, cloneImg))
	}

	cms, err := d.prot.Markers(ctx, "shop", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]string{}
	for _, m := range cms {
		state[m.ID] = m.State
	}
	for i, p := range marks {
		got := make([]byte, len(img))
		rerr := db.ReadAtTime(ctx, got, 0, p.ts)
		if i == 0 || i == 5 || i >= 10 {
			if rerr != nil || !bytes.Equal(got, p.img) || state[p.id] != catalog.StatePresent {
				t.Fatalf("marker %d (%s) should stay restorable: %v, same bytes %v, catalog %s", i, p.id, rerr, bytes.Equal(got, p.img), state[p.id])
			}
			continue
		}
		if !errors.Is(rerr, store.ErrOutOfWindow) || state[p.id] != catalog.StateExpired {
			t.Fatalf("marker %d (%s) should be expired: read %v, catalog %s", i, p.id, rerr, state[p.id])
		}
	}
	events, _ = d.prot.Events(ctx, catalog.EventFilter{Service: "shop"})
	var expiredEvents, foldEvents int
	for _, e := range events {
		switch {
		case e.Type == catalog.EventMarkerExpired:
			expiredEvents++
		case e.Type == EventRetentionFold && e.Severity == catalog.Info:
			foldEvents++
		}
	}
	if expiredEvents != 8 || foldEvents != 1 {
		t.Fatalf("%d marker_expired and %d retention_fold events, want 8 and 1", expiredEvents, foldEvents)
	}

	// The undo point: the volume as it was before the roll.
	uv, err := db.View(ctx, rec.UndoPoint)
	if err != nil {
		t.Fatalf("undo point folded away: %v", err)
	}
	if !bytes.Equal(readAll(t, uv), undoImg) {
		t.Fatal("undo point reads other bytes than before the restore")
	}
	uv.Close()
	if !bytes.Equal(readAll(t, view), viewImg) {
		t.Fatal("the exposure reads other bytes after the fold")
	}

	// A second fold at once changes nothing and records no event.
	n := len(events)
	if res, err := d.Fold(ctx, ""); err != nil || res.SegmentsRemoved != 0 || len(res.Services[0].MarkersExpired) != 0 {
		t.Fatalf("second fold: %v %+v", err, res)
	}
	if events, _ = d.prot.Events(ctx, catalog.EventFilter{Service: "shop"}); len(events) != n {
		t.Fatalf("an idle fold recorded %d events", len(events)-n)
	}

	// The undo still works after the fold.
	line := d.holding(ctx, "shop", "test undo", func() api.RestoreLine {
		r, err := d.rs.r.Undo(ctx, "shop", nil)
		return recordLine(r, err)
	})
	if line.Error != "" {
		t.Fatalf("undo after fold: %s", line.Error)
	}
	got := make([]byte, len(img))
	if err := db.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, undoImg) {
		t.Fatalf("undo after fold does not bring back the volume: %v", err)
	}
}

// An unfinished restore keeps folds off its service until it is resumed
// or undone.
func TestRestoreKeep(t *testing.T) {
	recs := []*restore.Record{
		{ID: "a", Kind: restore.KindService, Service: "s", State: restore.StateDone, UndoPoint: 10, Volumes: []string{"s/a"}},
		{ID: "b", Kind: restore.KindVolume, Service: "s", State: restore.StateDone, UndoPoint: 20, Volumes: []string{"s/b"}},
	}
	if u, v, why := restoreKeep(recs); u != 20 || !slices.Equal(v, []string{"s/b"}) || why != "" {
		t.Fatalf("last done restore: %d %v %q", u, v, why)
	}
	recs[1].UndoneBy = "c"
	recs = append(recs, &restore.Record{ID: "c", Kind: restore.KindUndo, Service: "s", State: restore.StateDone})
	if u, _, why := restoreKeep(recs); u != 0 || why != "" {
		t.Fatalf("undone restore still kept: %d %q", u, why)
	}
	recs = append(recs, &restore.Record{ID: "d", Kind: restore.KindService, Service: "s", State: restore.StateFailed, UndoPoint: 40})
	if _, _, why := restoreKeep(recs); !strings.Contains(why, "restore d is unfinished") {
		t.Fatalf("unfinished restore: %q", why)
	}
}

// The loop folds on its own, the API folds on request, and /metrics counts.
func TestFoldLoopAndAPI(t *testing.T) {
	d := startDaemon(t, "", policy(foldHCL), func(c *Config) { c.FoldInterval = 20 * time.Millisecond })
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(scrape(t, d), `lockstep_retention_folds_total{outcome="ok",service="shop"}`) {
		if time.Now().After(deadline) {
			t.Fatal("the retention loop never folded shop")
		}
		time.Sleep(20 * time.Millisecond)
	}
	res, err := d.c.Fold(ctx, "shop")
	if err != nil || len(res.Services) != 1 || res.Services[0].Service != "shop" || res.Unprotected != nil || res.Services[0].WindowStart.IsZero() {
		t.Fatalf("fold shop: %v %+v", err, res)
	}
	if _, err := d.c.Fold(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.Fold(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `no service "nope"`) {
		t.Fatalf("fold of an unknown service: %v", err)
	}
	if body := scrape(t, d); !strings.Contains(body, "lockstep_retention_last_fold_timestamp_seconds{service=\"shop\"}") {
		t.Fatal("no last fold time in /metrics")
	}
}
