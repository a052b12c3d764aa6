package protect

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/catalog/boltcat"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

type quiescer struct {
	sdk.Plugin
	mu      sync.Mutex
	fail    bool
	freezes int
}

func (q *quiescer) Prepare(context.Context, sdk.App) error { return nil }
func (q *quiescer) Freeze(context.Context, sdk.App, time.Duration) (sdk.Evidence, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.freezes++
	if q.fail {
		return nil, errors.New("cannot lock tables")
	}
	return sdk.Evidence{"gtid": "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"}, nil
}
func (q *quiescer) Thaw(context.Context, sdk.App) error { return nil }

type plugins struct{ q *quiescer }

func (p plugins) Plugin(context.Context, *model.Service, *model.App) (sdk.Plugin, error) {
	return p.q, nil
}

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

type rig struct {
	dir string
	st  *store.Store
	cat *boltcat.Catalog
	clk *clock.Fake
	q   *quiescer
	p   *Protector
	pol *model.Policy
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{dir: t.TempDir(), clk: clock.NewFake(t0), q: &quiescer{}}
	ctx := context.Background()
	var err error
	r.st, err = store.Open(ctx, filepath.Join(r.dir, "data"), store.Options{Clock: r.clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.st.Close() })
	for _, v := range []string{"shop-db", "shop-files"} {
		if _, err := r.st.CreateVolume(ctx, store.VolumeSpec{Name: v, Size: 1 << 20, BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	r.pol = &model.Policy{Services: []*model.Service{{
		Name:        "shop",
		Volumes:     []*model.Volume{{Name: "shop-db", Size: 1 << 20, BlockSize: 4096}, {Name: "shop-files", Size: 1 << 20, BlockSize: 4096}},
		Apps:        []*model.App{{Plugin: "mysql", Name: "db", Volumes: []string{"shop-db"}}},
		Consistency: model.Consistency{Every: 5 * time.Minute, QuiesceTimeout: time.Second, OnQuiesceFailure: model.CrashConsistent},
		RPO:         model.RPO{Journal: 12 * time.Minute},
	}}}
	r.open(t)
	return r
}

func (r *rig) open(t *testing.T) {
	t.Helper()
	var err error
	r.cat, err = boltcat.Open(filepath.Join(r.dir, "catalog.db"), boltcat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.cat.Close() })
	r.p, err = New(Config{Store: r.st, Catalog: r.cat, Plugins: plugins{r.q}, Clock: r.clk, HeartbeatEvery: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.p.Apply(context.Background(), r.pol); err != nil {
		t.Fatal(err)
	}
}

// advance moves the fake clock in steps of d, ticking each time.
func (r *rig) advance(total, step time.Duration) {
	for el := time.Duration(0); el < total; el += step {
		r.clk.Advance(step)
		r.p.Tick(context.Background())
		r.p.Wait()
	}
}

func TestScheduledMarkersAndStatus(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.advance(16*time.Minute, 10*time.Second)
	ms, err := r.p.Markers(ctx, "shop", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d markers in 16 minutes of a 5 minute schedule, want 3", len(ms))
	}
	for _, m := range ms {
		if m.Class != catalog.ClassApp || m.Trigger != catalog.TriggerSchedule || len(m.Apps) != 1 {
			t.Fatalf("marker %+v", m)
		}
	}
	if len(r.st.Markers("shop")) != 3 {
		t.Fatalf("journal holds %d markers", len(r.st.Markers("shop")))
	}
	svcs, err := r.p.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Schedule != "every 5m" || svcs[0].LastApp == nil || svcs[0].RPO.Breached || !svcs[0].Next.Equal(t0.Add(20*time.Minute)) {
		t.Fatalf("services %+v", svcs)
	}
	st, err := r.p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PolicyVersion != 1 || len(st.OpenAlerts) != 0 || !st.Started.Equal(t0) {
		t.Fatalf("status %+v", st)
	}
	mt := r.p.Metrics()
	if len(mt.Services) != 1 || mt.Services[0].Markers["app"] != 3 || mt.Services[0].RPOAge > 5*time.Minute {
		t.Fatalf("metrics %+v", mt)
	}
	// Applying the same policy again is not a new version.
	ap, err := r.p.Apply(ctx, r.pol)
	if err != nil || ap.Version != 1 {
		t.Fatalf("re-apply: %+v %v", ap, err)
	}
}

func TestFailedQuiesceBreachesRPO(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.advance(6*time.Minute, 10*time.Second) // one app marker at +5m
	r.q.mu.Lock()
	r.q.fail = true
	r.q.mu.Unlock()
	r.advance(13*time.Minute, 10*time.Second) // crash markers at +10m, +15m; breach at +17m
	al, err := r.p.Alerts(ctx, catalog.AlertFilter{OpenOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(al) != 1 || al[0].Cause != catalog.CauseFailedQuiesce || !al[0].Start.Equal(t0.Add(17*time.Minute)) {
		t.Fatalf("alerts %+v", al)
	}
	r.q.mu.Lock()
	r.q.fail = false
	r.q.mu.Unlock()
	m, err := r.p.Mark(ctx, "shop")
	if err != nil || m.Class != catalog.ClassApp || m.Trigger != catalog.TriggerManual {
		t.Fatalf("manual mark %+v %v", m, err)
	}
	r.advance(10*time.Second, 10*time.Second)
	al, _ = r.p.Alerts(ctx, catalog.AlertFilter{})
	if len(al) != 1 || al[0].Open() {
		t.Fatalf("alert not closed: %+v", al)
	}
	if _, err := r.p.Mark(ctx, "nope"); !errors.Is(err, ErrNoService) {
		t.Fatalf("Mark(nope): %v", err)
	}
}

func TestRestartAfterDowntime(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.advance(6*time.Minute, 10*time.Second)
	// The daemon dies; a marker made it to the journal but not the catalog.
	r.cat.Close()
	if _, err := r.st.Mark(ctx, store.MarkSpec{Service: "shop", Class: store.ClassApp, Volumes: []string{"shop-db", "shop-files"}}); err != nil {
		t.Fatal(err)
	}
	r.clk.Advance(40 * time.Minute)
	r.open(t)
	es, _ := r.p.Events(ctx, catalog.EventFilter{Type: catalog.EventReconciled})
	if len(es) != 1 {
		t.Fatalf("%d reconciled events", len(es))
	}
	ds, _ := r.cat.Downtimes(ctx, time.Time{})
	if len(ds) != 1 || ds[0].End.Sub(ds[0].Start) < 40*time.Minute {
		t.Fatalf("downtimes %+v", ds)
	}
	// The reconciled marker was taken at the crash, so the RPO is now
	// breached since the daemon went down.
	r.p.Tick(ctx)
	r.p.Wait()
	al, _ := r.p.Alerts(ctx, catalog.AlertFilter{})
	if len(al) != 1 || al[0].Cause != catalog.CauseDaemonDown {
		t.Fatalf("alerts %+v", al)
	}
	missed, _ := r.p.Events(ctx, catalog.EventFilter{Type: catalog.EventMissedSchedule})
	if len(missed) == 0 {
		t.Fatal("missed activations during the downtime not recorded")
	}
}

// TestRunRealClock runs the loop on the real clock for a moment: markers
// happen on a one-second schedule and Run returns when ctx ends.
func TestRunRealClock(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateVolume(ctx, store.VolumeSpec{Name: "v", Size: 1 << 20, BlockSize: 4096}); err != nil {
		t.Fatal(err)
	}
	cat, err := boltcat.Open(filepath.Join(dir, "catalog.db"), boltcat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	p, err := New(Config{Store: st, Catalog: cat, Plugins: plugins{&quiescer{}}, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Run before Start: %v", err)
	}
	if _, err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pol := &model.Policy{Services: []*model.Service{{Name: "s", Volumes: []*model.Volume{{Name: "v", Size: 1 << 20, BlockSize: 4096}},
		Apps:        []*model.App{{Plugin: "x", Name: "a", Volumes: []string{"v"}}},
		Consistency: model.Consistency{Schedule: "* * * * * *"}, RPO: model.RPO{Journal: time.Minute}}}}
	if _, err := p.Apply(ctx, pol); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2200*time.Millisecond)
	defer cancel()
	if err := p.Run(rctx); err != nil {
		t.Fatal(err)
	}
	ms, err := p.Markers(ctx, "s", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 1 || len(ms) > 3 {
		t.Fatalf("%d markers in 2.2 s of a one-second schedule", len(ms))
	}
	for _, m := range ms {
		if m.Class != catalog.ClassApp {
			t.Fatalf("marker %+v", m)
		}
	}
}

// While a restore holds a service, no marker is taken: scheduled ones are
// recorded as missed with the reason, manual ones refused; after release
// the schedule resumes.
func TestHoldStopsMarkers(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	release, err := r.p.Hold(ctx, "shop", "a restore is rolling its volumes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.p.Mark(ctx, "shop"); !errors.Is(err, ErrHeld) {
		t.Fatalf("Mark while held: %v, want ErrHeld", err)
	}
	r.advance(11*time.Minute, 10*time.Second)
	if n := len(r.st.Markers("shop")); n != 0 {
		t.Fatalf("%d markers taken while held", n)
	}
	evs, err := r.p.Events(ctx, catalog.EventFilter{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	missed := 0
	for _, e := range evs {
		if e.Type == catalog.EventMissedSchedule && strings.Contains(e.Message, "a restore is rolling its volumes") {
			missed++
		}
	}
	if missed == 0 {
		t.Fatalf("no missed-schedule event naming the hold in %+v", evs)
	}
	release()
	release() // idempotent
	r.advance(6*time.Minute, 10*time.Second)
	if n := len(r.st.Markers("shop")); n == 0 {
		t.Fatal("no marker after the hold was released")
	}
	if _, err := r.p.Mark(ctx, "shop"); err != nil {
		t.Fatalf("Mark after release: %v", err)
	}
}
