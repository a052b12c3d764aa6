package restore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// calls is the shared, ordered log of what the fakes saw.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(format string, args ...any) {
	c.mu.Lock()
	c.log = append(c.log, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *calls) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

// fakeApp is a plugin whose app is a flag; faults are injected by name.
type fakeApp struct {
	calls *calls
	mu    sync.Mutex
	up    map[string]bool
	// failStart/failStop make the next n Start/Stop calls of an app fail.
	failStart, failStop map[string]int
}

func newFakeApp(c *calls) *fakeApp {
	return &fakeApp{calls: c, up: map[string]bool{}, failStart: map[string]int{}, failStop: map[string]int{}}
}

var _ sdk.Plugin = (*fakeApp)(nil)

func (f *fakeApp) Info(context.Context) (sdk.Info, error)           { return sdk.Info{Name: "fake"}, nil }
func (f *fakeApp) ConfigSchema(context.Context) (sdk.Schema, error) { return sdk.Schema{}, nil }
func (f *fakeApp) Validate(context.Context, sdk.App) (sdk.Diagnostics, error) {
	return nil, nil
}
func (f *fakeApp) Prepare(context.Context, sdk.App) error { return nil }
func (f *fakeApp) Freeze(context.Context, sdk.App, time.Duration) (sdk.Evidence, error) {
	return nil, nil
}
func (f *fakeApp) Thaw(context.Context, sdk.App) error { return nil }

func (f *fakeApp) Health(_ context.Context, a sdk.App) (sdk.Health, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.add("health:%s", a.Name)
	return sdk.Health{OK: f.up[a.Name], Detail: "flag"}, nil
}

func (f *fakeApp) Stop(_ context.Context, a sdk.App) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failStop[a.Name] > 0 {
		f.failStop[a.Name]--
		f.calls.add("stop-failed:%s", a.Name)
		return errors.New("injected stop failure")
	}
	f.calls.add("stop:%s", a.Name)
	f.up[a.Name] = false
	return nil
}

func (f *fakeApp) Start(_ context.Context, a sdk.App) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failStart[a.Name] > 0 {
		f.failStart[a.Name]--
		f.calls.add("start-failed:%s", a.Name)
		return errors.New("injected start failure")
	}
	f.calls.add("start:%s", a.Name)
	f.up[a.Name] = true
	return nil
}

func (f *fakeApp) isUp(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up[name]
}

// engine wraps the store's engine: it logs fences and rolls, checks that a
// volume refuses host I/O while it rolls, and injects roll failures.
type engine struct {
	restore.StoreEngine
	calls *calls
	mu    sync.Mutex
	// failRoll makes the next n rolls of a volume fail.
	failRoll map[string]int
	// unfencedWrites counts host writes that got through during a roll.
	unfencedWrites int
	beforeRoll     func(name string)
}

func (e *engine) Volume(name string) (restore.Volume, error) {
	v, err := e.Store.Volume(name)
	if err != nil {
		return nil, err
	}
	return &volume{Volume: v, e: e}, nil
}

type volume struct {
	*store.Volume
	e *engine
}

func (v *volume) SetFenced(on bool) {
	v.e.calls.add("fence=%v:%s", on, v.Name())
	v.Volume.SetFenced(on)
}

func (v *volume) RollTo(ctx context.Context, at int64) (int64, error) {
	v.e.mu.Lock()
	fail := v.e.failRoll[v.Name()] > 0
	if fail {
		v.e.failRoll[v.Name()]--
	}
	hook := v.e.beforeRoll
	v.e.mu.Unlock()
	if fail {
		v.e.calls.add("roll-failed:%s", v.Name())
		return 0, errors.New("injected roll failure")
	}
	// A host write now must be refused.
	err := v.Volume.WriteAt(ctx, make([]byte, v.BlockSize()), 0, false)
	if !errors.Is(err, blockdev.ErrFenced) {
		v.e.mu.Lock()
		v.e.unfencedWrites++
		v.e.mu.Unlock()
	}
	if hook != nil {
		hook(v.Name())
	}
	v.e.calls.add("roll:%s", v.Name())
	return v.Volume.RollTo(ctx, at)
}

const (
	bs      = 4096
	volSize = 1 << 20 // 256 blocks
)

// fill writes generation gen into every block of vol in [from, to).
func fill(t testing.TB, v *store.Volume, gen string, from, to int) {
	t.Helper()
	buf := make([]byte, (to-from)*bs)
	for b := from; b < to; b++ {
		copy(buf[(b-from)*bs:], block(v.Name(), gen, b))
	}
	if err := v.WriteAt(context.Background(), buf, int64(from)*bs, false); err != nil {
		t.Fatal(err)
	}
}

func block(vol, gen string, b int) []byte {
	p := bytes.Repeat([]byte(fmt.Sprintf("%s|%s|%06d;", vol, gen, b)), bs/16+1)
	return p[:bs]
}

// gens returns, per block, which generation the volume holds ("?" for none).
func gens(t testing.TB, v *store.Volume, candidates ...string) []string {
	t.Helper()
	n := int(v.Size() / bs)
	buf := make([]byte, v.Size())
	if err := v.ReadAtTime(context.Background(), buf, 0, 1<<62); err != nil {
		t.Fatal(err)
	}
	out := make([]string, n)
	for b := range n {
		out[b] = "?"
		for _, g := range candidates {
			if bytes.Equal(buf[b*bs:(b+1)*bs], block(v.Name(), g, b)) {
				out[b] = g
				break
			}
		}
	}
	return out
}

// holds reports whether every block of v is generation gen.
func holds(t testing.TB, v *store.Volume, gen string) bool {
	t.Helper()
	for _, g := range gens(t, v, gen) {
		if g != gen {
			return false
		}
	}
	return true
}

func summary(gs []string) string {
	var parts []string
	for i := 0; i < len(gs); {
		j := i
		for j < len(gs) && gs[j] == gs[i] {
			j++
		}
		parts = append(parts, fmt.Sprintf("%s x%d", gs[i], j-i))
		i = j
	}
	return strings.Join(parts, ", ")
}

// fixture is a store with a three-volume, three-app service.
type fixture struct {
	t     *testing.T
	dir   string
	st    *store.Store
	calls *calls
	apps  *fakeApp
	eng   *engine
	svc   restore.Service
	r     *restore.Restorer
	evs   *events
}

type events struct {
	mu  sync.Mutex
	all []restore.Event
}

func (e *events) Event(_ context.Context, ev restore.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

var vols = []string{"shop-db", "shop-wal", "shop-files"}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, n := range vols {
		if _, err := st.CreateVolume(context.Background(), store.VolumeSpec{Name: n, Size: volSize, BlockSize: bs}); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{t: t, dir: dir, st: st, calls: &calls{}, evs: &events{}}
	f.apps = newFakeApp(f.calls)
	f.eng = &engine{StoreEngine: restore.StoreEngine{Store: st}, calls: f.calls, failRoll: map[string]int{}}
	// Dependency order: db first, web last.
	f.svc = restore.Service{Name: "shop", Volumes: vols, Apps: []restore.App{
		{Plugin: f.apps, App: sdk.App{Service: "shop", Name: "db", Volumes: []string{"shop-db", "shop-wal"}}},
		{Plugin: f.apps, App: sdk.App{Service: "shop", Name: "cms", Volumes: []string{"shop-files"}}},
		{Plugin: f.apps, App: sdk.App{Service: "shop", Name: "web"}},
	}}
	for _, a := range []string{"db", "cms", "web"} {
		f.apps.up[a] = true
	}
	f.r = f.newRestorer(st)
	return f
}

func (f *fixture) newRestorer(st *store.Store) *restore.Restorer {
	r, err := restore.New(restore.Config{
		Dir: filepath.Join(f.dir, "restores"), Engine: f.eng, Markers: restore.StoreMarkers{Store: st},
		Services: restore.ServiceMap{"shop": f.svc}, Events: f.evs, HealthWait: 2 * time.Second, Parallel: 1,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) vol(name string) *store.Volume {
	v, err := f.st.Volume(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// history writes generation A, marks m1 (app), writes B over the first
// half, marks m2 (crash), writes C over the middle, and returns the markers
// and the time between B and m2.
func (f *fixture) history() (m1, m2 *store.Marker, afterB time.Time) {
	t := f.t
	ctx := context.Background()
	for _, n := range vols {
		fill(t, f.vol(n), "A", 0, 256)
	}
	m1, err := f.st.Mark(ctx, store.MarkSpec{Service: "shop", Class: store.ClassApp, Volumes: vols, Evidence: []byte(`{"db":{"lsn":"0/1"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range vols {
		fill(t, f.vol(n), "B", 0, 128)
	}
	f.st.Sync(ctx)
	time.Sleep(2 * time.Millisecond)
	afterB = time.Now()
	time.Sleep(2 * time.Millisecond)
	m2, err = f.st.Mark(ctx, store.MarkSpec{Service: "shop", Class: store.ClassCrash, Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range vols {
		fill(t, f.vol(n), "C", 64, 192)
	}
	return m1, m2, afterB
}

// want checks each volume's per-block generations.
func (f *fixture) want(desc string, layout func(b int) string) {
	f.t.Helper()
	for _, n := range vols {
		gs := gens(f.t, f.vol(n), "A", "B", "C", "X")
		for b, g := range gs {
			if g != layout(b) {
				f.t.Fatalf("%s: volume %s block %d holds %s, want %s (volume: %s)", desc, n, b, g, layout(b), summary(gs))
			}
		}
	}
}

// The layouts history() leaves: at m1, just before m2, and now.
func atM1(int) string { return "A" }

func atAfterB(b int) string {
	if b < 128 {
		return "B"
	}
	return "A"
}

func atNow(b int) string {
	switch {
	case b >= 64 && b < 192:
		return "C"
	case b < 64:
		return "B"
	}
	return "A"
}

func indexOf(log []string, s string) int { return slices.Index(log, s) }
