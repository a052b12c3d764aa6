// Package catalogtest is the conformance suite every catalog.Catalog
// implementation runs (bbolt now, PostgreSQL later).
package catalogtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
)

// Bound is the event bound the suite opens catalogs with.
const (
	BoundEvents = 50
	BoundAge    = time.Hour
)

// Opener opens the catalog kept in dir, with an event history bounded to the
// newest maxEvents events and to maxAge before the newest. Opening the same
// dir again after Close must show everything written before.
type Opener func(t *testing.T, dir string, maxEvents int, maxAge time.Duration) catalog.Catalog

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	fresh := func(t *testing.T) catalog.Catalog {
		c := open(t, t.TempDir(), BoundEvents, BoundAge)
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("Policies", func(t *testing.T) { testPolicies(t, fresh(t)) })
	t.Run("Markers", func(t *testing.T) { testMarkers(t, fresh(t)) })
	t.Run("LatestMarker", func(t *testing.T) { testLatest(t, fresh(t)) })
	t.Run("Events", func(t *testing.T) { testEvents(t, fresh(t)) })
	t.Run("EventBoundCount", func(t *testing.T) { testBoundCount(t, fresh(t)) })
	t.Run("EventBoundAge", func(t *testing.T) { testBoundAge(t, fresh(t)) })
	t.Run("Alerts", func(t *testing.T) { testAlerts(t, fresh(t)) })
	t.Run("Heartbeat", func(t *testing.T) { testHeartbeat(t, fresh(t)) })
	t.Run("Reconcile", func(t *testing.T) { testReconcile(t, fresh(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, fresh(t)) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("Closed", func(t *testing.T) {
		c := open(t, t.TempDir(), BoundEvents, BoundAge)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := c.Marker(context.Background(), "x"); !errors.Is(err, catalog.ErrClosed) {
			t.Fatalf("Marker after Close: %v, want ErrClosed", err)
		}
		if err := c.PutMarker(context.Background(), marker("svc", "m", 1, catalog.ClassApp)); !errors.Is(err, catalog.ErrClosed) {
			t.Fatalf("PutMarker after Close: %v, want ErrClosed", err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func marker(svc, id string, sec int, class string) catalog.Marker {
	return catalog.Marker{ID: id, Service: svc, Time: t0.Add(time.Duration(sec) * time.Second), Seq: uint64(sec), Class: class,
		Trigger: catalog.TriggerSchedule, State: catalog.StatePresent, Volumes: []string{svc + "-data"},
		FreezeStart: t0.Add(time.Duration(sec) * time.Second), FreezeEnd: t0.Add(time.Duration(sec)*time.Second + 40*time.Millisecond),
		Apps: []catalog.AppResult{{App: "db", Plugin: "postgresql", Froze: true, Thawed: true, Prepare: time.Millisecond,
			Freeze: 2 * time.Millisecond, Thaw: time.Millisecond, Evidence: json.RawMessage(`{"lsn":"0/16B3748"}`)}}}
}

func ids(ms []catalog.Marker) string {
	s := ""
	for _, m := range ms {
		s += m.ID + " "
	}
	return s
}

func testPolicies(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	if _, err := c.Policy(ctx); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Policy on empty catalog: %v, want ErrNotFound", err)
	}
	p1, err := c.PutPolicy(ctx, catalog.AppliedPolicy{Hash: "h1", Time: t0, Body: json.RawMessage(`{"services":[{"name":"web"}]}`)},
		[]catalog.Volume{{Service: "web", Name: "web-data", Size: 1 << 20, BlockSize: 4096}, {Service: "web", Name: "web-db", Size: 1 << 20, BlockSize: 4096}})
	must(t, err)
	if p1.Version != 1 {
		t.Fatalf("first version %d, want 1", p1.Version)
	}
	p2, err := c.PutPolicy(ctx, catalog.AppliedPolicy{Hash: "h2", Time: t0.Add(time.Hour), Body: json.RawMessage(`{"services":[]}`)},
		[]catalog.Volume{{Service: "web", Name: "web-data", Size: 2 << 20, BlockSize: 4096}, {Service: "mail", Name: "spool", Size: 1 << 20, BlockSize: 512}})
	must(t, err)
	if p2.Version != 2 {
		t.Fatalf("second version %d, want 2", p2.Version)
	}
	cur, err := c.Policy(ctx)
	must(t, err)
	if cur.Version != 2 || cur.Hash != "h2" || !cur.Time.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Policy = %+v", cur)
	}
	all, err := c.Policies(ctx)
	must(t, err)
	if len(all) != 2 || all[0].Version != 1 || all[1].Version != 2 || string(all[0].Body) != `{"services":[{"name":"web"}]}` {
		t.Fatalf("Policies = %+v", all)
	}
	vols, err := c.Volumes(ctx, "")
	must(t, err)
	if len(vols) != 2 || vols[0].Service != "mail" || vols[1].Name != "web-data" || vols[1].Size != 2<<20 {
		t.Fatalf("Volumes = %+v", vols)
	}
	if !vols[1].Created.Equal(t0) || !vols[0].Created.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Created not kept for an existing volume / not set for a new one: %+v", vols)
	}
	vols, err = c.Volumes(ctx, "web")
	must(t, err)
	if len(vols) != 1 {
		t.Fatalf("Volumes(web) = %+v, want web-data only", vols)
	}
}

func testMarkers(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	if _, err := c.Marker(ctx, "nope"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Marker(nope): %v, want ErrNotFound", err)
	}
	// "web" is a prefix of "web2": the time index must not mix them.
	for i, svc := range []string{"web", "web2", "mail"} {
		for j := 0; j < 5; j++ {
			class := catalog.ClassApp
			if j == 3 {
				class = catalog.ClassCrash
			}
			m := marker(svc, fmt.Sprintf("%s-%d", svc, j), 10*j+i, class)
			if class == catalog.ClassCrash {
				m.Reason = `app "db": freeze: timeout`
			}
			must(t, c.PutMarker(ctx, m))
		}
	}
	got, err := c.Marker(ctx, "web-1")
	must(t, err)
	want := marker("web", "web-1", 10, catalog.ClassApp)
	if !got.Time.Equal(want.Time) || got.Seq != want.Seq || got.FreezeWindow() != 40*time.Millisecond || len(got.Apps) != 1 ||
		string(got.Apps[0].Evidence) != `{"lsn":"0/16B3748"}` || got.Apps[0].Freeze != 2*time.Millisecond {
		t.Fatalf("Marker round trip: %+v", got)
	}
	list := func(f catalog.MarkerFilter) string {
		t.Helper()
		ms, err := c.Markers(ctx, f)
		must(t, err)
		return ids(ms)
	}
	for _, tc := range []struct {
		f    catalog.MarkerFilter
		want string
	}{
		{catalog.MarkerFilter{Service: "web"}, "web-0 web-1 web-2 web-3 web-4 "},
		{catalog.MarkerFilter{Service: "web2", Since: t0.Add(11 * time.Second)}, "web2-1 web2-2 web2-3 web2-4 "},
		{catalog.MarkerFilter{Service: "web", Since: t0.Add(10 * time.Second), Until: t0.Add(30 * time.Second)}, "web-1 web-2 "},
		{catalog.MarkerFilter{Service: "web", Class: catalog.ClassCrash}, "web-3 "},
		{catalog.MarkerFilter{Service: "web", Limit: 2}, "web-3 web-4 "},
		{catalog.MarkerFilter{Service: "web", Limit: 2, Until: t0.Add(25 * time.Second)}, "web-1 web-2 "},
		{catalog.MarkerFilter{Service: "web", Limit: 10, Class: catalog.ClassApp}, "web-0 web-1 web-2 web-4 "},
		{catalog.MarkerFilter{Service: "nope"}, ""},
		{catalog.MarkerFilter{Since: t0.Add(40 * time.Second)}, "web-4 web2-4 mail-4 "},
		{catalog.MarkerFilter{Limit: 2}, "web2-4 mail-4 "},
	} {
		if g := list(tc.f); g != tc.want {
			t.Errorf("Markers(%+v) = %q, want %q", tc.f, g, tc.want)
		}
	}
	// Replacing a marker moves it in time order and changes its class.
	m := marker("web", "web-0", 45, catalog.ClassCrash)
	must(t, c.PutMarker(ctx, m))
	must(t, c.PutMarker(ctx, m)) // idempotent
	if g := list(catalog.MarkerFilter{Service: "web"}); g != "web-1 web-2 web-3 web-4 web-0 " {
		t.Errorf("after replacing web-0: %q", g)
	}
	if err := c.PutMarker(ctx, catalog.Marker{Service: "web"}); err == nil {
		t.Errorf("PutMarker without id succeeded")
	}
}

func testLatest(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	if _, err := c.LatestMarker(ctx, "web", catalog.ClassApp); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("LatestMarker on empty: %v", err)
	}
	must(t, c.PutMarker(ctx, marker("web", "a1", 1, catalog.ClassApp)))
	must(t, c.PutMarker(ctx, marker("web", "a2", 2, catalog.ClassApp)))
	must(t, c.PutMarker(ctx, marker("web", "c3", 3, catalog.ClassCrash)))
	s := marker("web", "s4", 4, catalog.ClassSkipped)
	s.State = ""
	must(t, c.PutMarker(ctx, s))
	must(t, c.PutMarker(ctx, marker("web2", "x5", 5, catalog.ClassApp)))
	exp := marker("web", "a2", 2, catalog.ClassApp)
	exp.State = catalog.StateExpired
	check := func(want string, classes ...string) {
		t.Helper()
		m, err := c.LatestMarker(ctx, "web", classes...)
		must(t, err)
		if m.ID != want {
			t.Errorf("LatestMarker(%v) = %s, want %s", classes, m.ID, want)
		}
	}
	check("a2", catalog.ClassApp)
	check("c3", catalog.ClassApp, catalog.ClassCrash)
	check("c3")
	check("s4", catalog.ClassSkipped, catalog.ClassApp)
	must(t, c.PutMarker(ctx, exp))
	check("a1", catalog.ClassApp) // an expired marker is not restorable
}

func testEvents(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	var last uint64
	for i := 0; i < 10; i++ {
		svc := "web"
		if i%2 == 1 {
			svc = "mail"
		}
		typ := catalog.EventMarker
		if i%3 == 0 {
			typ = catalog.EventMissedSchedule
		}
		e, err := c.AddEvent(ctx, catalog.Event{Time: t0.Add(time.Duration(i) * time.Second), Type: typ, Service: svc, Message: fmt.Sprint(i)})
		must(t, err)
		if e.Seq <= last {
			t.Fatalf("seq %d after %d", e.Seq, last)
		}
		last = e.Seq
	}
	e, err := c.AddEvent(ctx, catalog.Event{Time: t0.Add(10 * time.Second), Type: catalog.EventDaemonStart, Message: "no severity"})
	must(t, err)
	if e.Severity == "" {
		t.Fatalf("AddEvent left Severity empty: %+v", e)
	}
	msgs := func(f catalog.EventFilter) string {
		t.Helper()
		es, err := c.Events(ctx, f)
		must(t, err)
		s := ""
		for _, e := range es {
			s += e.Message + " "
		}
		return s
	}
	for _, tc := range []struct {
		f    catalog.EventFilter
		want string
	}{
		{catalog.EventFilter{Service: "web"}, "0 2 4 6 8 "},
		{catalog.EventFilter{Type: catalog.EventMissedSchedule}, "0 3 6 9 "},
		{catalog.EventFilter{Service: "mail", Type: catalog.EventMissedSchedule}, "3 9 "},
		{catalog.EventFilter{Service: "web", Since: t0.Add(3 * time.Second)}, "4 6 8 "},
		{catalog.EventFilter{Service: "web", Limit: 2}, "6 8 "},
		{catalog.EventFilter{Type: catalog.EventMarker, AfterSeq: last - 3}, "7 8 "},
		{catalog.EventFilter{Limit: 1}, "no severity "},
	} {
		if g := msgs(tc.f); g != tc.want {
			t.Errorf("Events(%+v) = %q, want %q", tc.f, g, tc.want)
		}
	}
}

// testBoundCount: after many more events than the bound, exactly the newest
// BoundEvents remain.
func testBoundCount(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	n := 3*BoundEvents + 7
	for i := 0; i < n; i++ {
		_, err := c.AddEvent(ctx, catalog.Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Type: catalog.EventMarker, Message: fmt.Sprint(i)})
		must(t, err)
	}
	es, err := c.Events(ctx, catalog.EventFilter{})
	must(t, err)
	if len(es) != BoundEvents {
		t.Fatalf("%d events kept, want the bound %d", len(es), BoundEvents)
	}
	if es[0].Message != fmt.Sprint(n-BoundEvents) || es[len(es)-1].Message != fmt.Sprint(n-1) {
		t.Fatalf("kept %s..%s, want the newest %d..%d", es[0].Message, es[len(es)-1].Message, n-BoundEvents, n-1)
	}
}

// testBoundAge: events older than BoundAge before the newest are dropped.
func testBoundAge(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		_, err := c.AddEvent(ctx, catalog.Event{Time: t0.Add(time.Duration(i) * 10 * time.Minute), Type: catalog.EventMarker, Message: fmt.Sprint(i)})
		must(t, err)
	}
	// Newest at t0+90m: kept are those at or after t0+30m.
	es, err := c.Events(ctx, catalog.EventFilter{})
	must(t, err)
	if len(es) != 7 || es[0].Message != "3" {
		t.Fatalf("kept %d events from %q, want 7 from \"3\"", len(es), es[0].Message)
	}
	for _, e := range es {
		if e.Time.Before(t0.Add(90*time.Minute - BoundAge)) {
			t.Fatalf("event %s at %s is older than the bound", e.Message, e.Time)
		}
	}
}

func testAlerts(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	a, err := c.OpenAlert(ctx, catalog.Alert{Service: "web", Tier: "journal", Cause: catalog.CauseFailedQuiesce, Target: 15 * time.Minute, Start: t0})
	must(t, err)
	if a.ID == "" || !a.Open() {
		t.Fatalf("OpenAlert = %+v", a)
	}
	again, err := c.OpenAlert(ctx, catalog.Alert{Service: "web", Tier: "journal", Cause: catalog.CauseDaemonDown, Start: t0.Add(time.Minute)})
	must(t, err)
	if again.ID != a.ID || again.Cause != catalog.CauseFailedQuiesce {
		t.Fatalf("second OpenAlert for the same service = %+v, want the open one %s", again, a.ID)
	}
	b, err := c.OpenAlert(ctx, catalog.Alert{Service: "mail", Tier: "journal", Cause: catalog.CauseMissedSchedule, Start: t0.Add(-time.Minute)})
	must(t, err)
	if b.ID == a.ID {
		t.Fatal("two services share an alert id")
	}
	closed, err := c.CloseAlert(ctx, a.ID, t0.Add(time.Hour))
	must(t, err)
	if closed.Open() || !closed.End.Equal(t0.Add(time.Hour)) {
		t.Fatalf("CloseAlert = %+v", closed)
	}
	closed, err = c.CloseAlert(ctx, a.ID, t0.Add(2*time.Hour))
	must(t, err)
	if !closed.End.Equal(t0.Add(time.Hour)) {
		t.Fatalf("closing twice moved the end to %s", closed.End)
	}
	if _, err := c.CloseAlert(ctx, "a-999", t0); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("CloseAlert(unknown): %v", err)
	}
	if _, err := c.CloseAlert(ctx, "bogus", t0); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("CloseAlert(bogus): %v", err)
	}
	all, err := c.Alerts(ctx, catalog.AlertFilter{})
	must(t, err)
	if len(all) != 2 || all[0].Service != "mail" || all[1].Service != "web" {
		t.Fatalf("Alerts = %+v, want mail then web (by start)", all)
	}
	open, err := c.Alerts(ctx, catalog.AlertFilter{OpenOnly: true})
	must(t, err)
	if len(open) != 1 || open[0].ID != b.ID {
		t.Fatalf("open alerts = %+v", open)
	}
	recent, err := c.Alerts(ctx, catalog.AlertFilter{Since: t0.Add(90 * time.Minute)})
	must(t, err)
	if len(recent) != 1 || recent[0].ID != b.ID {
		t.Fatalf("alerts open since +90m = %+v, want only the open one", recent)
	}
	web, err := c.Alerts(ctx, catalog.AlertFilter{Service: "web"})
	must(t, err)
	if len(web) != 1 || web[0].Cause != catalog.CauseFailedQuiesce || web[0].Target != 15*time.Minute {
		t.Fatalf("web alerts = %+v", web)
	}
	// After closing, a new breach opens a new alert.
	n, err := c.OpenAlert(ctx, catalog.Alert{Service: "web", Tier: "journal", Cause: catalog.CauseDaemonDown, Start: t0.Add(3 * time.Hour)})
	must(t, err)
	if n.ID == a.ID || n.Cause != catalog.CauseDaemonDown {
		t.Fatalf("new breach = %+v", n)
	}
}

func testHeartbeat(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	hb, err := c.LastHeartbeat(ctx)
	must(t, err)
	if !hb.IsZero() {
		t.Fatalf("fresh heartbeat %s", hb)
	}
	must(t, c.Heartbeat(ctx, t0))
	must(t, c.Heartbeat(ctx, t0.Add(10*time.Second)))
	hb, err = c.LastHeartbeat(ctx)
	must(t, err)
	if !hb.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("heartbeat %s", hb)
	}
	must(t, c.AddDowntime(ctx, catalog.Downtime{Start: t0, End: t0.Add(time.Hour)}))
	must(t, c.AddDowntime(ctx, catalog.Downtime{Start: t0.Add(5 * time.Hour), End: t0.Add(6 * time.Hour)}))
	ds, err := c.Downtimes(ctx, t0.Add(2*time.Hour))
	must(t, err)
	if len(ds) != 1 || !ds[0].Start.Equal(t0.Add(5*time.Hour)) {
		t.Fatalf("Downtimes = %+v", ds)
	}
	ds, err = c.Downtimes(ctx, time.Time{})
	must(t, err)
	if len(ds) != 2 || !ds[0].End.Equal(t0.Add(time.Hour)) {
		t.Fatalf("all Downtimes = %+v", ds)
	}
}

func testReconcile(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	ev, _ := json.Marshal(map[string]json.RawMessage{"db": json.RawMessage(`{"lsn":"0/1"}`)})
	journal := []store.Marker{
		{ID: "known", Service: "web", Class: "app", TS: t0.UnixNano(), Seq: 1, Volumes: []string{"v"}},
		{ID: "new", Service: "web", Class: "app", TS: t0.Add(time.Second).UnixNano(), Seq: 2, Volumes: []string{"v"}, Evidence: ev},
	}
	known := marker("web", "known", 0, catalog.ClassCrash) // the catalog's class wins
	must(t, c.PutMarker(ctx, known))
	must(t, c.PutMarker(ctx, marker("web", "gone", 5, catalog.ClassApp)))
	sk := marker("web", "skip-1", 6, catalog.ClassSkipped)
	sk.State = ""
	must(t, c.PutMarker(ctx, sk))
	rep, err := catalog.Reconcile(ctx, c, journal, t0.Add(time.Hour))
	must(t, err)
	if fmt.Sprint(rep.Added) != "[new]" || fmt.Sprint(rep.Expired) != "[gone]" {
		t.Fatalf("Reconcile = %+v, want added [new], expired [gone]", rep)
	}
	m, err := c.Marker(ctx, "new")
	must(t, err)
	if m.Trigger != catalog.TriggerReconcile || m.Class != "app" || m.Seq != 2 || !m.Time.Equal(t0.Add(time.Second)) ||
		len(m.Apps) != 1 || string(m.Apps[0].Evidence) != `{"lsn":"0/1"}` {
		t.Fatalf("reconciled marker = %+v", m)
	}
	m, err = c.Marker(ctx, "gone")
	must(t, err)
	if m.State != catalog.StateExpired {
		t.Fatalf("gone marker state %q", m.State)
	}
	m, err = c.Marker(ctx, "known")
	must(t, err)
	if m.Class != catalog.ClassCrash {
		t.Fatalf("reconcile overrode the catalog's class: %q", m.Class)
	}
	for typ, n := range map[string]int{catalog.EventReconciled: 1, catalog.EventMarkerExpired: 1} {
		es, err := c.Events(ctx, catalog.EventFilter{Type: typ})
		must(t, err)
		if len(es) != n {
			t.Fatalf("%d %s events, want %d", len(es), typ, n)
		}
	}
	rep, err = catalog.Reconcile(ctx, c, journal, t0.Add(2*time.Hour))
	must(t, err)
	if len(rep.Added)+len(rep.Expired) != 0 {
		t.Fatalf("second Reconcile changed %+v", rep)
	}
}

func testConcurrent(t *testing.T, c catalog.Catalog) {
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seqs := map[uint64]bool{}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				e, err := c.AddEvent(ctx, catalog.Event{Type: catalog.EventMarker, Message: "x"})
				if err != nil {
					t.Error(err)
					return
				}
				if e.Time.IsZero() {
					t.Error("AddEvent left Time zero")
				}
				mu.Lock()
				if seqs[e.Seq] {
					t.Errorf("seq %d assigned twice", e.Seq)
				}
				seqs[e.Seq] = true
				mu.Unlock()
				if err := c.PutMarker(ctx, marker("svc", fmt.Sprintf("g%d-%d", g, i), g*10+i, catalog.ClassApp)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	ms, err := c.Markers(ctx, catalog.MarkerFilter{Service: "svc"})
	must(t, err)
	if len(ms) != 40 {
		t.Fatalf("%d markers, want 40", len(ms))
	}
}

func testReopen(t *testing.T, open Opener) {
	ctx := context.Background()
	dir := t.TempDir()
	c := open(t, dir, BoundEvents, BoundAge)
	_, err := c.PutPolicy(ctx, catalog.AppliedPolicy{Hash: "h", Time: t0, Body: json.RawMessage(`{}`)}, []catalog.Volume{{Service: "web", Name: "v"}})
	must(t, err)
	must(t, c.PutMarker(ctx, marker("web", "m1", 1, catalog.ClassApp)))
	e, err := c.AddEvent(ctx, catalog.Event{Time: t0, Type: catalog.EventMarker, Message: "before"})
	must(t, err)
	a, err := c.OpenAlert(ctx, catalog.Alert{Service: "web", Tier: "journal", Start: t0})
	must(t, err)
	must(t, c.Heartbeat(ctx, t0))
	must(t, c.Close())

	c = open(t, dir, BoundEvents, BoundAge)
	defer c.Close()
	if p, err := c.Policy(ctx); err != nil || p.Version != 1 {
		t.Fatalf("policy after reopen: %+v %v", p, err)
	}
	if _, err := c.Marker(ctx, "m1"); err != nil {
		t.Fatalf("marker after reopen: %v", err)
	}
	if m, err := c.LatestMarker(ctx, "web", catalog.ClassApp); err != nil || m.ID != "m1" {
		t.Fatalf("time index after reopen: %+v %v", m, err)
	}
	e2, err := c.AddEvent(ctx, catalog.Event{Time: t0, Type: catalog.EventMarker, Message: "after"})
	must(t, err)
	if e2.Seq <= e.Seq {
		t.Fatalf("event seq went back after reopen: %d then %d", e.Seq, e2.Seq)
	}
	if al, err := c.Alerts(ctx, catalog.AlertFilter{OpenOnly: true}); err != nil || len(al) != 1 || al[0].ID != a.ID {
		t.Fatalf("alerts after reopen: %+v %v", al, err)
	}
	if hb, err := c.LastHeartbeat(ctx); err != nil || !hb.Equal(t0) {
		t.Fatalf("heartbeat after reopen: %s %v", hb, err)
	}
	if a2, err := c.OpenAlert(ctx, catalog.Alert{Service: "mail", Tier: "journal", Start: t0}); err != nil || a2.ID == a.ID {
		t.Fatalf("alert id reused after reopen: %+v %v", a2, err)
	}
}
