package sdk

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/stats"
)

// DefaultHold is the hold a Freeze gets when the host asks for none: the
// limit Windows VSS uses.
const DefaultHold = 10 * time.Second

// thawTimeout bounds a Thaw the watchdog starts on its own.
const thawTimeout = 30 * time.Second

// watchdog makes "thaw always happens" hold inside the plugin process: it
// thaws an app when the hold of its Freeze elapses without a Thaw, when the
// host's connection closes while the app is frozen, and when the host
// process disappears (see watchParent). It may call Thaw concurrently with a
// Freeze that hangs; that is why Thaw must be idempotent.
type watchdog struct {
	impl Plugin
	logf func(format string, args ...any)

	mu    sync.Mutex
	gen   uint64
	held  map[string]*heldApp
	conns int
	// thawing counts thaws under way, whoever started them; the plugin
	// exits only after they return. Added to under mu.
	thawing sync.WaitGroup
}

type heldApp struct {
	app   App
	gen   uint64
	timer *time.Timer
}

func newWatchdog(impl Plugin, logf func(string, ...any)) *watchdog {
	if logf == nil {
		// JSON on stderr: the host's go-plugin logs it at its level.
		l := hclog.New(&hclog.LoggerOptions{Name: "watchdog", Level: hclog.Info, JSONFormat: true, Output: os.Stderr})
		logf = func(format string, args ...any) { l.Warn(fmt.Sprintf(format, args...)) }
	}
	return &watchdog{impl: impl, logf: logf, held: map[string]*heldApp{}}
}

func appKey(a App) string { return a.Service + "\x00" + a.Name }

// freeze runs the plugin's Freeze under the watchdog and returns the
// evidence as JSON. On any failure the app is thawed before returning.
func (w *watchdog) freeze(ctx context.Context, app App, hold time.Duration) ([]byte, error) {
	if hold <= 0 {
		hold = DefaultHold
	}
	// Armed before the call, so a Freeze that hangs is thawed too.
	gen := w.arm(app, hold)
	ev, err := w.impl.Freeze(ctx, app, hold)
	if err == nil && ctx.Err() != nil {
		// The host gave up waiting and will not thaw this freeze.
		err = fmt.Errorf("freeze of app %q returned after the host's deadline: %w", app.Name, ctx.Err())
	}
	var b []byte
	if err == nil {
		b, err = encodeEvidence(ev)
	}
	if err != nil {
		if w.take(app, gen) {
			w.thawNow(app, "freeze failed")
		}
		return nil, err
	}
	return b, nil
}

// thaw is the host's Thaw: it disarms the timer and thaws.
func (w *watchdog) thaw(ctx context.Context, app App) error {
	w.mu.Lock()
	w.disarmLocked(app, 0)
	w.thawing.Add(1)
	w.mu.Unlock()
	defer w.thawing.Done()
	return w.impl.Thaw(ctx, app)
}

// arm starts the hold timer of app and returns its generation.
func (w *watchdog) arm(app App, hold time.Duration) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	g := w.gen
	k := appKey(app)
	if old := w.held[k]; old != nil {
		old.timer.Stop()
	}
	h := &heldApp{app: app, gen: g}
	h.timer = time.AfterFunc(hold, func() {
		if w.take(app, g) {
			w.thawNow(app, fmt.Sprintf("hold of %s elapsed without a thaw", hold))
		}
	})
	w.held[k] = h
	return g
}

// take forgets app's hold if it is generation gen and, when it did, counts
// the thaw the caller must now run with thawNow. A false return means
// someone else (the timer, a Thaw, a newer Freeze) owns the app now.
func (w *watchdog) take(app App, gen uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.disarmLocked(app, gen) {
		return false
	}
	w.thawing.Add(1)
	return true
}

// disarmLocked forgets app's hold if it is generation gen (any generation
// when gen is 0) and reports whether it did. w.mu is held.
func (w *watchdog) disarmLocked(app App, gen uint64) bool {
	k := appKey(app)
	h := w.held[k]
	if h == nil || (gen != 0 && h.gen != gen) {
		return false
	}
	h.timer.Stop()
	delete(w.held, k)
	return true
}

// thawNow thaws an app taken from held; it ends the thaw take or thawAll
// counted.
func (w *watchdog) thawNow(app App, why string) {
	defer w.thawing.Done()
	ctx, cancel := context.WithTimeout(context.Background(), thawTimeout)
	defer cancel()
	if err := w.impl.Thaw(ctx, app); err != nil {
		w.logf("thaw of app %q of service %q (%s) failed: %v", app.Name, app.Service, why, err)
		return
	}
	w.logf("thawed app %q of service %q: %s", app.Name, app.Service, why)
}

// thawAll thaws every frozen app, in parallel, and waits.
func (w *watchdog) thawAll(why string) {
	w.mu.Lock()
	apps := make([]App, 0, len(w.held))
	for k, h := range w.held {
		h.timer.Stop()
		apps = append(apps, h.app)
		delete(w.held, k)
	}
	w.thawing.Add(len(apps))
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range apps {
		wg.Go(func() { w.thawNow(a, why) })
	}
	wg.Wait()
}

// frozen reports how many apps are held; for tests.
func (w *watchdog) frozen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.held)
}

// The watchdog is the gRPC server's stats.Handler so that it sees the
// host's connections come and go.
var _ stats.Handler = (*watchdog)(nil)

func (w *watchdog) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (w *watchdog) HandleRPC(context.Context, stats.RPCStats)                         {}
func (w *watchdog) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn thaws everything when the last host connection closes: a
// host killed with SIGKILL closes its end of the socket at once.
func (w *watchdog) HandleConn(_ context.Context, s stats.ConnStats) {
	w.mu.Lock()
	switch s.(type) {
	case *stats.ConnBegin:
		w.conns++
		w.mu.Unlock()
	case *stats.ConnEnd:
		w.conns--
		last := w.conns == 0
		w.mu.Unlock()
		if last {
			w.thawAll("the host's connection closed")
		}
	default:
		w.mu.Unlock()
	}
}

// watchParent thaws everything and exits when the process that started
// the plugin goes away (the plugin is re-parented, so getppid changes).
// Polling works whoever the new parent is, where PR_SET_PDEATHSIG fires on
// the death of the starting thread rather than the process.
func watchParent(w *watchdog, every time.Duration, getppid func() int, exit func()) {
	ppid := getppid()
	if ppid <= 1 {
		return // started by init: nothing to watch
	}
	for {
		time.Sleep(every)
		if getppid() != ppid {
			w.thawAll("the host process is gone")
			// A thaw started earlier (the connection closing first, a
			// hold elapsing) may still run: exiting would cut it short.
			w.thawing.Wait()
			exit()
			return
		}
	}
}
