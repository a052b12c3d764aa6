package rpo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/catalog/boltcat"
	"github.com/lockstep-io/lockstep/policies/model"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

type hook struct {
	mu     sync.Mutex
	states []State
	notes  []Notification
}

func (h *hook) ObserveRPO(s State) { h.mu.Lock(); h.states = append(h.states, s); h.mu.Unlock() }
func (h *hook) Notify(ctx context.Context, n Notification) error {
	h.mu.Lock()
	h.notes = append(h.notes, n)
	h.mu.Unlock()
	return nil
}

func setup(t *testing.T) (catalog.Catalog, *clock.Fake, *Evaluator, *hook, []*model.Service) {
	t.Helper()
	cat, err := boltcat.Open(filepath.Join(t.TempDir(), "c.db"), boltcat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	clk := clock.NewFake(t0)
	h := &hook{}
	ev := &Evaluator{Catalog: cat, Clock: clk, Notifier: h, Metrics: h}
	ev.Protect("web", t0)
	svcs := []*model.Service{{Name: "web", RPO: model.RPO{Journal: 15 * time.Minute}}}
	return cat, clk, ev, h, svcs
}

func app(id string, at time.Time, class string) catalog.Marker {
	return catalog.Marker{ID: id, Service: "web", Time: at, Seq: uint64(at.Unix()), Class: class, State: catalog.StatePresent, Reason: "freeze of db timed out"}
}

func eval(t *testing.T, ev *Evaluator, svcs []*model.Service) State {
	t.Helper()
	if err := ev.Evaluate(context.Background(), svcs); err != nil {
		t.Fatal(err)
	}
	s, ok := ev.State("web")
	if !ok {
		t.Fatal("no state")
	}
	return s
}

func TestBreachAndRecovery(t *testing.T) {
	cat, clk, ev, h, svcs := setup(t)
	ctx := context.Background()
	clk.Advance(10 * time.Minute)
	if s := eval(t, ev, svcs); s.Breached || s.Age != 10*time.Minute {
		t.Fatalf("at +10m: %+v", s)
	}
	clk.Advance(6 * time.Minute)
	s := eval(t, ev, svcs)
	if !s.Breached || s.Alert == nil || s.Alert.Cause != catalog.CauseMissedSchedule || !s.Alert.Start.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("at +16m: %+v alert %+v", s, s.Alert)
	}
	// Evaluating again keeps the one alert.
	clk.Advance(time.Minute)
	eval(t, ev, svcs)
	if al, _ := cat.Alerts(ctx, catalog.AlertFilter{}); len(al) != 1 {
		t.Fatalf("%d alerts", len(al))
	}
	if err := cat.PutMarker(ctx, app("m1", t0.Add(17*time.Minute+30*time.Second), catalog.ClassApp)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	s = eval(t, ev, svcs)
	if s.Breached || s.Alert != nil || s.Age != 30*time.Second {
		t.Fatalf("after a marker: %+v", s)
	}
	al, _ := cat.Alerts(ctx, catalog.AlertFilter{Service: "web"})
	if len(al) != 1 || al[0].Open() || !al[0].End.Equal(t0.Add(17*time.Minute+30*time.Second)) || !al[0].Start.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("closed alert %+v", al)
	}
	es, _ := cat.Events(ctx, catalog.EventFilter{Type: catalog.EventRPOBreach})
	rs, _ := cat.Events(ctx, catalog.EventFilter{Type: catalog.EventRPORecovered})
	if len(es) != 1 || len(rs) != 1 {
		t.Fatalf("%d breach, %d recovered events", len(es), len(rs))
	}
	if len(h.notes) != 2 || h.notes[0].Event != catalog.EventRPOBreach || h.notes[1].Event != catalog.EventRPORecovered {
		t.Fatalf("notifications %+v", h.notes)
	}
	if len(h.states) != 4 {
		t.Fatalf("%d metric observations, want 4", len(h.states))
	}
}

func TestCrashMarkersDoNotCount(t *testing.T) {
	cat, clk, ev, _, svcs := setup(t)
	ctx := context.Background()
	cat.PutMarker(ctx, app("a", t0, catalog.ClassApp))
	for i := 1; i <= 4; i++ {
		cat.PutMarker(ctx, app("c"+string(rune('0'+i)), t0.Add(time.Duration(i)*5*time.Minute), catalog.ClassCrash))
	}
	clk.Advance(21 * time.Minute)
	s := eval(t, ev, svcs)
	if !s.Breached || s.Age != 21*time.Minute {
		t.Fatalf("%+v", s)
	}
	if s.Alert.Cause != catalog.CauseFailedQuiesce || !strings.Contains(s.Alert.Detail, "4 marker(s)") || !strings.Contains(s.Alert.Detail, "timed out") {
		t.Fatalf("alert %+v", s.Alert)
	}
}

func TestDaemonDownCause(t *testing.T) {
	cat, clk, ev, _, svcs := setup(t)
	ctx := context.Background()
	cat.PutMarker(ctx, app("a", t0, catalog.ClassApp))
	cat.AddDowntime(ctx, catalog.Downtime{Start: t0.Add(5 * time.Minute), End: t0.Add(2 * time.Hour)})
	clk.Set(t0.Add(2 * time.Hour))
	s := eval(t, ev, svcs)
	if !s.Breached || s.Alert.Cause != catalog.CauseDaemonDown || !s.Alert.Start.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("%+v %+v", s, s.Alert)
	}
}

func TestMissedScheduleDetail(t *testing.T) {
	cat, clk, ev, _, svcs := setup(t)
	ctx := context.Background()
	cat.PutMarker(ctx, app("a", t0, catalog.ClassApp))
	cat.AddEvent(ctx, catalog.Event{Time: t0.Add(10 * time.Minute), Type: catalog.EventMissedSchedule, Service: "web", Message: "previous marker still running"})
	clk.Advance(16 * time.Minute)
	s := eval(t, ev, svcs)
	if s.Alert.Cause != catalog.CauseMissedSchedule || s.Alert.Detail != "previous marker still running" {
		t.Fatalf("alert %+v", s.Alert)
	}
}

func TestAlertSurvivesRestart(t *testing.T) {
	cat, clk, ev, _, svcs := setup(t)
	clk.Advance(20 * time.Minute)
	first := eval(t, ev, svcs).Alert
	// A new evaluator (the daemon restarted) finds the open alert.
	ev2 := &Evaluator{Catalog: cat, Clock: clk}
	ev2.Protect("web", t0)
	clk.Advance(time.Minute)
	s := eval(t, ev2, svcs)
	if s.Alert == nil || s.Alert.ID != first.ID {
		t.Fatalf("after restart alert %+v, want %s", s.Alert, first.ID)
	}
}

func TestNoTargetNoAlert(t *testing.T) {
	_, clk, ev, _, svcs := setup(t)
	svcs[0].RPO.Journal = 0
	clk.Advance(24 * time.Hour)
	if s := eval(t, ev, svcs); s.Breached {
		t.Fatalf("%+v", s)
	}
}

func TestWebhook(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			w.WriteHeader(400)
		}
	}))
	defer srv.Close()
	cat, clk, ev, _, svcs := setup(t)
	ev.Notifier = &Webhook{URL: srv.URL + "/hook?token=t0ps3cret"}
	clk.Advance(16 * time.Minute)
	eval(t, ev, svcs)
	cat.PutMarker(context.Background(), app("m", clk.Now(), catalog.ClassApp))
	clk.Advance(time.Second)
	eval(t, ev, svcs)
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 {
		t.Fatalf("%d webhook calls", len(bodies))
	}
	var n Notification
	if err := json.Unmarshal([]byte(bodies[0]), &n); err != nil {
		t.Fatal(err)
	}
	if n.Event != catalog.EventRPOBreach || n.Alert.Service != "web" || n.Alert.Cause == "" || !n.Alert.Open() {
		t.Fatalf("webhook body %s", bodies[0])
	}
	if strings.Contains(bodies[0]+bodies[1], "t0ps3cret") {
		t.Fatal("webhook body holds the token")
	}
}

func TestWebhookErrorHidesURL(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer srv.Close()
	w := &Webhook{URL: srv.URL + "/hook?token=t0ps3cret"}
	err := w.Notify(context.Background(), Notification{Event: catalog.EventRPOBreach})
	if err == nil || strings.Contains(err.Error(), "t0ps3cret") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("err %v", err)
	}
	w = &Webhook{URL: "http://127.0.0.1:1/hook?token=t0ps3cret"}
	err = w.Notify(context.Background(), Notification{Event: catalog.EventRPOBreach})
	if err == nil || strings.Contains(err.Error(), "t0ps3cret") {
		t.Fatalf("err %v", err)
	}
}
