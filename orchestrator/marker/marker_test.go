package marker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/catalog/boltcat"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

// calls records plugin calls in the order they happened.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	c.log = append(c.log, s)
	c.mu.Unlock()
}

func (c *calls) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

func (c *calls) index(s string) int {
	for i, x := range c.list() {
		if x == s {
			return i
		}
	}
	return -1
}

// fake is an in-process plugin with fault injection.
type fake struct {
	sdk.Plugin // unimplemented methods panic
	name       string
	rec        *calls

	prepareDelay time.Duration
	prepareErr   error
	freezeDelay  time.Duration
	freezeErr    error
	freezePanic  bool
	// freezeHang blocks Freeze, ignoring its context, until release is
	// closed (never, when nil).
	freezeHang bool
	release    chan struct{}
	thawErr    error
	evidence   sdk.Evidence

	mu     sync.Mutex
	frozen bool
	hold   time.Duration
}

func (f *fake) Prepare(ctx context.Context, app sdk.App) error {
	f.rec.add("prepare:" + f.name)
	if f.prepareDelay > 0 {
		time.Sleep(f.prepareDelay)
	}
	return f.prepareErr
}

func (f *fake) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	f.rec.add("freeze:" + f.name)
	f.mu.Lock()
	f.hold = f.hold + hold
	f.mu.Unlock()
	if f.freezePanic {
		panic("boom in " + f.name)
	}
	if f.freezeHang {
		if f.release == nil {
			select {}
		}
		<-f.release
	}
	if f.freezeDelay > 0 {
		select {
		case <-time.After(f.freezeDelay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.freezeErr != nil {
		return nil, f.freezeErr
	}
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
	f.rec.add("frozen:" + f.name)
	ev := f.evidence
	if ev == nil {
		ev = sdk.Evidence{"app": f.name}
	}
	return ev, nil
}

func (f *fake) Thaw(ctx context.Context, app sdk.App) error {
	f.rec.add("thaw:" + f.name)
	if f.thawErr != nil {
		return f.thawErr
	}
	f.mu.Lock()
	f.frozen = false
	f.mu.Unlock()
	return nil
}

func (f *fake) isFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

type fakes map[string]*fake

func (fs fakes) Plugin(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error) {
	f, ok := fs[app.Name]
	if !ok {
		return nil, fmt.Errorf("agent for app %q lost", app.Name)
	}
	return f, nil
}

type env struct {
	st   *store.Store
	cat  catalog.Catalog
	rec  *calls
	fs   fakes
	svc  *model.Service
	run  *Runner
	vols []string
}

// newEnv builds a service portal: web and cms depend on db.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat, err := boltcat.Open(filepath.Join(dir, "catalog.db"), boltcat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	e := &env{st: st, cat: cat, rec: &calls{}, fs: fakes{}}
	svc := &model.Service{Name: "portal", Consistency: model.Consistency{QuiesceTimeout: 200 * time.Millisecond, OnQuiesceFailure: model.CrashConsistent}}
	for _, v := range []string{"portal-db", "portal-web"} {
		if _, err := st.CreateVolume(ctx, store.VolumeSpec{Name: v, Size: 1 << 20, BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
		svc.Volumes = append(svc.Volumes, &model.Volume{Name: v, Size: 1 << 20, BlockSize: 4096})
		e.vols = append(e.vols, v)
	}
	svc.Apps = []*model.App{
		{Plugin: "postgresql", Name: "db", Volumes: []string{"portal-db"}, Config: map[string]any{"password": model.NewSecret("s3cret-pw", `env("PW")`)}},
		{Plugin: "exec", Name: "web", Volumes: []string{"portal-web"}, DependsOn: []string{"db"}},
		{Plugin: "exec", Name: "cms", Volumes: []string{"portal-web"}, DependsOn: []string{"db"}},
	}
	for _, a := range svc.Apps {
		e.fs[a.Name] = &fake{name: a.Name, rec: e.rec}
	}
	e.svc = svc
	e.run = &Runner{Fence: st, Catalog: cat, Plugins: e.fs, ThawTimeout: 200 * time.Millisecond}
	return e
}

func (e *env) allThawed(t *testing.T) {
	t.Helper()
	for n, f := range e.fs {
		if f.isFrozen() {
			t.Errorf("app %s left frozen", n)
		}
	}
}

func (e *env) journalMarkers() []store.Marker { return e.st.Markers("portal") }

func TestAppConsistent(t *testing.T) {
	e := newEnv(t)
	e.fs["db"].evidence = sdk.Evidence{"lsn": "0/16B3748", "timeline": 1}
	e.fs["db"].prepareDelay = 30 * time.Millisecond
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassApp || m.Reason != "" || m.Trigger != catalog.TriggerManual || m.ID == "" || m.Seq == 0 {
		t.Fatalf("marker = %+v", m)
	}
	e.allThawed(t)
	// Dependents freeze before their dependency; thaw is the reverse.
	for _, dep := range []string{"web", "cms"} {
		if !(e.rec.index("frozen:"+dep) < e.rec.index("freeze:db")) {
			t.Errorf("db froze before its dependent %s finished freezing: %v", dep, e.rec.list())
		}
		if !(e.rec.index("thaw:db") < e.rec.index("thaw:"+dep)) {
			t.Errorf("%s thawed before db: %v", dep, e.rec.list())
		}
	}
	// Prepare ran on all before any freeze.
	for _, a := range []string{"db", "web", "cms"} {
		if e.rec.index("prepare:"+a) > e.rec.index("freeze:web") && e.rec.index("freeze:web") >= 0 {
			t.Errorf("prepare of %s after a freeze: %v", a, e.rec.list())
		}
	}
	if m.FreezeStart.IsZero() || !m.FreezeEnd.After(m.FreezeStart) || m.FreezeWindow() > 5*time.Second {
		t.Errorf("freeze window %s .. %s", m.FreezeStart, m.FreezeEnd)
	}
	if m.Apps[0].Prepare < 30*time.Millisecond || m.Apps[0].Freeze <= 0 || m.Apps[0].Thaw <= 0 || !m.Apps[0].Froze || !m.Apps[0].Thawed {
		t.Errorf("db timings %+v", m.Apps[0])
	}
	if e.fs["db"].hold != 2*200*time.Millisecond {
		t.Errorf("hold passed to Freeze %s, want twice the quiesce timeout", e.fs["db"].hold)
	}
	// Evidence in the journal record and in the catalog.
	jm, ok := e.st.Marker(m.ID)
	if !ok {
		t.Fatal("marker not in the journal")
	}
	var ev Evidence
	if err := json.Unmarshal(jm.Evidence, &ev); err != nil {
		t.Fatalf("journal evidence %q: %v", jm.Evidence, err)
	}
	if string(ev["db"]) != `{"lsn":"0/16B3748","timeline":1}` || jm.Class != store.ClassApp || len(jm.Volumes) != 2 {
		t.Errorf("journal marker %+v evidence %s", jm, ev["db"])
	}
	cm, err := e.cat.Marker(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Class != catalog.ClassApp || string(cm.Apps[0].Evidence) != `{"lsn":"0/16B3748","timeline":1}` || cm.Seq != jm.Seq || cm.Time.UnixNano() != jm.TS {
		t.Errorf("catalog marker %+v", cm)
	}
	es, _ := e.cat.Events(context.Background(), catalog.EventFilter{Type: catalog.EventMarker})
	if len(es) != 1 {
		t.Errorf("%d marker events", len(es))
	}
	// No secret in anything recorded.
	b, _ := json.Marshal(cm)
	if strings.Contains(string(b), "s3cret") || strings.Contains(string(jm.Evidence), "s3cret") {
		t.Error("secret recorded")
	}
}

func TestSecretReachesPlugin(t *testing.T) {
	e := newEnv(t)
	var got string
	e.fs["db"].evidence = sdk.Evidence{"ok": true}
	p := &capture{fake: e.fs["db"], got: &got}
	e.run.Plugins = pluginsFunc(func(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error) {
		if app.Name == "db" {
			return p, nil
		}
		return e.fs[app.Name], nil
	})
	if _, err := e.run.Run(context.Background(), e.svc, catalog.TriggerManual); err != nil {
		t.Fatal(err)
	}
	if got != "s3cret-pw" {
		t.Fatalf("plugin saw password %q, want the revealed secret", got)
	}
}

type capture struct {
	*fake
	got *string
}

func (c *capture) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	*c.got = app.Config.String("password")
	return c.fake.Freeze(ctx, app, hold)
}

type pluginsFunc func(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error)

func (f pluginsFunc) Plugin(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error) {
	return f(ctx, svc, app)
}

func TestFreezeHangsPastDeadline(t *testing.T) {
	e := newEnv(t)
	db := e.fs["db"]
	db.freezeHang, db.release = true, make(chan struct{})
	go func() { time.Sleep(350 * time.Millisecond); close(db.release) }() // returns late, frozen
	start := time.Now()
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "quiesce deadline") || !strings.Contains(m.Reason, `"db"`) {
		t.Fatalf("marker class %q reason %q", m.Class, m.Reason)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("run took %s", el)
	}
	// db's late Freeze finished within the thaw timeout and was thawed.
	if e.rec.index("thaw:db") < e.rec.index("frozen:db") {
		t.Errorf("db not thawed after its late freeze: %v", e.rec.list())
	}
	e.allThawed(t)
	jm, ok := e.st.Marker(m.ID)
	if !ok || jm.Class != store.ClassCrash {
		t.Fatalf("journal marker %+v, want crash", jm)
	}
	if es, _ := e.cat.Events(context.Background(), catalog.EventFilter{Type: catalog.EventQuiesceFailed}); len(es) != 1 {
		t.Errorf("%d quiesce_failed events", len(es))
	}
}

func TestFreezeHangsForever(t *testing.T) {
	e := newEnv(t)
	e.fs["web"].freezeHang = true // never returns
	start := time.Now()
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("run took %s with a hung plugin; want about quiesce + thaw timeouts (0.4 s)", el)
	}
	if m.Class != catalog.ClassCrash {
		t.Fatalf("class %q", m.Class)
	}
	if e.rec.index("freeze:db") >= 0 {
		t.Errorf("db was frozen although a dependent failed: %v", e.rec.list())
	}
	if !e.fs["cms"].isFrozen() && e.rec.index("thaw:cms") < 0 {
		t.Errorf("cms not thawed")
	}
	e.allThawed(t)
	es, _ := e.cat.Events(context.Background(), catalog.EventFilter{Type: catalog.EventThawFailed})
	if len(es) != 1 || !strings.Contains(es[0].Message, "watchdog") {
		t.Errorf("thaw_failed events %+v", es)
	}
}

func TestFreezeError(t *testing.T) {
	e := newEnv(t)
	e.fs["db"].freezeErr = errors.New("pg_backup_start: permission denied")
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "permission denied") {
		t.Fatalf("class %q reason %q", m.Class, m.Reason)
	}
	for _, a := range []string{"web", "cms", "db"} {
		if e.rec.index("thaw:"+a) < 0 {
			t.Errorf("%s not thawed: %v", a, e.rec.list())
		}
	}
	e.allThawed(t)
	if m.Apps[0].Evidence != nil {
		t.Errorf("failed app has evidence")
	}
}

func TestFreezePanic(t *testing.T) {
	e := newEnv(t)
	e.fs["cms"].freezePanic = true
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "panicked") {
		t.Fatalf("class %q reason %q", m.Class, m.Reason)
	}
	e.allThawed(t)
}

func TestThawFailure(t *testing.T) {
	e := newEnv(t)
	e.fs["web"].thawErr = errors.New("fsfreeze -u: device busy")
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	// The cut was taken while every app was frozen: still app-consistent.
	if m.Class != catalog.ClassApp {
		t.Fatalf("class %q", m.Class)
	}
	es, _ := e.cat.Events(context.Background(), catalog.EventFilter{Type: catalog.EventThawFailed})
	if len(es) != 1 || !strings.Contains(es[0].Message, "device busy") || es[0].Severity != catalog.Error {
		t.Fatalf("thaw_failed events %+v", es)
	}
	if m.Apps[1].Thawed || m.Apps[1].Error == "" {
		t.Errorf("web result %+v", m.Apps[1])
	}
	if e.rec.index("thaw:db") < 0 || e.rec.index("thaw:cms") < 0 {
		t.Errorf("others not thawed: %v", e.rec.list())
	}
}

func TestPrepareFailureIsAnEvent(t *testing.T) {
	e := newEnv(t)
	e.fs["db"].prepareErr = errors.New("checkpoint failed")
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil || m.Class != catalog.ClassApp {
		t.Fatalf("marker %+v err %v", m, err)
	}
	if es, _ := e.cat.Events(context.Background(), catalog.EventFilter{Type: catalog.EventPrepareFailed}); len(es) != 1 {
		t.Fatalf("%d prepare_failed events", len(es))
	}
}

func TestSlowPrepareIsBounded(t *testing.T) {
	e := newEnv(t)
	e.fs["cms"].prepareDelay = 5 * time.Second
	e.run.PrepareTimeout = 50 * time.Millisecond
	start := time.Now()
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("a hung Prepare held the marker for %s", time.Since(start))
	}
	// cms may still be preparing: it is not frozen, so the marker is crash.
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, `"cms": prepare: no answer`) {
		t.Fatalf("class %q reason %q", m.Class, m.Reason)
	}
	if e.rec.index("freeze:cms") >= 0 {
		t.Errorf("Freeze called while Prepare ran: %v", e.rec.list())
	}
	e.allThawed(t)
}

func TestSkip(t *testing.T) {
	e := newEnv(t)
	e.svc.Consistency.OnQuiesceFailure = model.Skip
	e.fs["db"].freezeErr = errors.New("nope")
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if !errors.Is(err, ErrSkipped) {
		t.Fatalf("err %v, want ErrSkipped", err)
	}
	if len(e.journalMarkers()) != 0 {
		t.Fatal("a skipped marker reached the journal")
	}
	if m.Class != catalog.ClassSkipped || !strings.Contains(m.Reason, "nope") {
		t.Fatalf("marker %+v", m)
	}
	cm, err := e.cat.Marker(context.Background(), m.ID)
	if err != nil || cm.Class != catalog.ClassSkipped || cm.Restorable() {
		t.Fatalf("catalog skipped marker %+v %v", cm, err)
	}
	e.allThawed(t)
	if es, _ := e.cat.Events(context.Background(), catalog.EventFilter{Type: catalog.EventMarkerSkipped}); len(es) != 1 {
		t.Fatalf("%d marker_skipped events", len(es))
	}
}

func TestCancelDuringFreeze(t *testing.T) {
	e := newEnv(t)
	e.svc.Consistency.QuiesceTimeout = 5 * time.Second
	e.fs["db"].freezeDelay = 5 * time.Second // returns on ctx
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := e.run.Run(ctx, e.svc, catalog.TriggerSchedule)
	if err == nil {
		t.Fatal("cancelled run succeeded")
	}
	if len(e.journalMarkers()) != 0 {
		t.Fatal("a cancelled marker reached the journal")
	}
	for _, a := range []string{"web", "cms", "db"} {
		if e.rec.index("thaw:"+a) < 0 {
			t.Errorf("%s not thawed after cancel: %v", a, e.rec.list())
		}
	}
	e.allThawed(t)
}

func TestPluginLost(t *testing.T) {
	e := newEnv(t)
	delete(e.fs, "cms")
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "lost") {
		t.Fatalf("class %q reason %q", m.Class, m.Reason)
	}
	if e.rec.index("freeze:web") >= 0 {
		t.Errorf("froze apps although one could not be reached")
	}
}

type slowFence struct {
	Fence
	delay time.Duration
}

func (f slowFence) Mark(ctx context.Context, spec store.MarkSpec) (*store.Marker, error) {
	time.Sleep(f.delay)
	return f.Fence.Mark(ctx, spec)
}

func TestHoldExpiredBeforeFence(t *testing.T) {
	e := newEnv(t)
	e.run.Hold = 10 * time.Millisecond
	e.run.Fence = slowFence{Fence: e.st, delay: 30 * time.Millisecond}
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "past the hold") {
		t.Fatalf("class %q reason %q", m.Class, m.Reason)
	}
	if cm, _ := e.cat.Marker(context.Background(), m.ID); cm.Class != catalog.ClassCrash {
		t.Fatalf("catalog class %q", cm.Class)
	}
}

func TestEvidenceTooLarge(t *testing.T) {
	e := newEnv(t)
	e.fs["web"].evidence = sdk.Evidence{"blob": strings.Repeat("x", MaxEvidence)}
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "evidence of") {
		t.Fatalf("class %q reason %q", m.Class, m.Reason)
	}
	e.allThawed(t)
}

func TestNoApps(t *testing.T) {
	e := newEnv(t)
	e.svc.Apps = nil
	e.svc.Consistency.OnQuiesceFailure = model.Skip
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if m.Class != catalog.ClassCrash || m.FreezeWindow() != 0 {
		t.Fatalf("marker %+v", m)
	}
}

func TestFenceFailure(t *testing.T) {
	e := newEnv(t)
	e.svc.Volumes = append(e.svc.Volumes, &model.Volume{Name: "missing"})
	_, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err %v", err)
	}
	e.allThawed(t)
	if len(e.journalMarkers()) != 0 {
		t.Fatal("marker in the journal")
	}
}

func TestFreezeLevels(t *testing.T) {
	apps := []*model.App{
		{Name: "db"}, {Name: "cache"},
		{Name: "api", DependsOn: []string{"db", "cache"}},
		{Name: "web", DependsOn: []string{"api"}},
		{Name: "cron", DependsOn: []string{"db"}},
	}
	lv, err := freezeLevels(apps)
	if err != nil {
		t.Fatal(err)
	}
	name := func(l []int) string {
		s := ""
		for _, i := range l {
			s += apps[i].Name + " "
		}
		return s
	}
	got := ""
	for _, l := range lv {
		got += "[" + name(l) + "]"
	}
	if want := "[web cron ][api ][db cache ]"; got != want {
		t.Fatalf("levels %s, want %s", got, want)
	}
	if _, err := freezeLevels([]*model.App{{Name: "a", DependsOn: []string{"b"}}, {Name: "b", DependsOn: []string{"a"}}}); err == nil {
		t.Fatal("cycle accepted")
	}
	if _, err := freezeLevels([]*model.App{{Name: "a", DependsOn: []string{"zz"}}}); err == nil {
		t.Fatal("unknown dependency accepted")
	}
}

// failingCatalog refuses to record markers, as a full disk would.
type failingCatalog struct{ catalog.Catalog }

func (failingCatalog) PutMarker(context.Context, catalog.Marker) error {
	return errors.New("no space left on device")
}

// TestCatalogFailureAfterFence: the journal holds the marker, Run says the
// record failed, and Reconcile (at the next start) adds it with its class
// and evidence.
func TestCatalogFailureAfterFence(t *testing.T) {
	e := newEnv(t)
	e.fs["db"].evidence = sdk.Evidence{"lsn": "0/3000060"}
	e.run.Catalog = failingCatalog{e.cat}
	m, err := e.run.Run(context.Background(), e.svc, catalog.TriggerSchedule)
	if err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("err %v", err)
	}
	if m.ID == "" || m.Class != catalog.ClassApp {
		t.Fatalf("marker %+v", m)
	}
	e.allThawed(t)
	if _, err := e.cat.Marker(context.Background(), m.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("marker recorded: %v", err)
	}
	rep, err := catalog.Reconcile(context.Background(), e.cat, e.st.Markers(""), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Added) != 1 || rep.Added[0] != m.ID {
		t.Fatalf("reconcile %+v", rep)
	}
	cm, err := e.cat.Marker(context.Background(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var db json.RawMessage
	for _, a := range cm.Apps {
		if a.App == "db" {
			db = a.Evidence
		}
	}
	if cm.Class != catalog.ClassApp || cm.Trigger != catalog.TriggerReconcile || string(db) != `{"lsn":"0/3000060"}` {
		t.Fatalf("reconciled %+v", cm)
	}
}
