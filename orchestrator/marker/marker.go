// Package marker runs the consistency-marker protocol for one service:
// prepare every app, freeze them under one deadline, fence every volume with
// one journal record, thaw whatever froze, record the result.
//
// # Order
//
// Apps are frozen in levels: level 0 holds the apps no other app depends on,
// level n+1 the apps that only apps of levels <= n depend on. A level is
// frozen in parallel and only after the level before it has frozen, so a
// dependent (a web server) stops writing before its dependency (its database)
// is frozen, as a shutdown would order it. Thaw runs the levels in exact
// reverse, each level in parallel, so a dependency is serving again before
// its dependents resume.
//
// # Guarantees
//
//   - All freezes share one deadline, Service.Consistency.QuiesceTimeout
//     (DefaultQuiesceTimeout when zero), counted from the first Freeze call.
//   - Every app whose Freeze was called is thawed (Thaw is idempotent), in
//     reverse order, each Thaw bounded by Runner.ThawTimeout, whatever
//     failed before: a plugin error or panic, the deadline, the fence, or
//     the caller's context.
//   - A marker is class app only when the service has apps, every one
//     froze and was still inside its hold when the fence returned;
//     otherwise it is crash with the reason, or skipped when
//     OnQuiesceFailure is skip (never for a service without apps).
package marker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

// Defaults.
const (
	DefaultQuiesceTimeout = 10 * time.Second
	DefaultPrepareTimeout = 60 * time.Second
	DefaultThawTimeout    = 10 * time.Second
	// MaxEvidence is the most evidence one plugin may return.
	MaxEvidence = 64 << 10
)

// Plugins finds the plugin that quiesces an app. The host launcher (local
// go-plugin processes, or an agent on the app's host) implements it. An
// error (plugin missing, agent lost) fails that app's quiesce.
type Plugins interface {
	Plugin(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error)
}

// Fence places one marker record in every volume journal of a service;
// *store.Store implements it. Mark must be durable when it returns.
type Fence interface {
	Mark(ctx context.Context, spec store.MarkSpec) (*store.Marker, error)
}

var _ Fence = (*store.Store)(nil)

// ErrSkipped is returned (wrapped) when a quiesce failure skipped the marker
// under on_quiesce_failure = skip. The skipped attempt is still recorded.
var ErrSkipped = errors.New("marker: skipped after quiesce failure")

// Runner runs the protocol. The zero values of the optional fields take the
// defaults. A Runner is safe for concurrent use; the caller must not run two
// markers for one service at once (the scheduler and protect ensure it).
type Runner struct {
	Fence   Fence
	Catalog catalog.Catalog // optional: nil records nothing
	Plugins Plugins
	Clock   clock.Clock
	Logger  *slog.Logger

	PrepareTimeout time.Duration // per Prepare call
	ThawTimeout    time.Duration // per Thaw call
	// Hold is passed to Freeze: how long a plugin keeps its app frozen
	// before its watchdog thaws it. Default: twice the quiesce timeout, so
	// that the fence and the thaw fit after the slowest freeze.
	Hold time.Duration
}

// Evidence is what the journal record's Evidence bytes hold: each app's
// plugin evidence by app name, JSON encoded.
type Evidence map[string]json.RawMessage

// Run takes one marker of svc. It returns the marker as recorded. When the
// marker was skipped it returns the skipped record and an error wrapping
// ErrSkipped; when the fence failed it returns an error and no point exists.
// A catalog failure after a successful fence is returned too, with the
// marker: the journal holds it and Reconcile adds it at the next start.
func (r *Runner) Run(ctx context.Context, svc *model.Service, trigger string) (catalog.Marker, error) {
	clk := r.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := clk.Now()
	run := &run{r: r, svc: svc, clk: clk, log: log.With("service", svc.Name)}
	m := catalog.Marker{Service: svc.Name, Trigger: trigger, State: catalog.StatePresent}
	for _, v := range svc.Volumes {
		m.Volumes = append(m.Volumes, v.Name)
	}
	if len(m.Volumes) == 0 {
		return m, fmt.Errorf("marker: service %q has no volume", svc.Name)
	}

	levels, err := freezeLevels(svc.Apps)
	if err != nil {
		return m, fmt.Errorf("marker: service %q: %w", svc.Name, err)
	}
	run.apps = make([]*appRun, len(svc.Apps))
	for i, a := range svc.Apps {
		run.apps[i] = &appRun{app: a, res: catalog.AppResult{App: a.Name, Plugin: a.Plugin}}
	}
	run.levels = levels

	// Thaw must happen whatever happens below, including a panic in our
	// own code: the deferred thaw runs on a context that ignores the
	// caller's cancellation.
	thawed := false
	defer func() {
		if !thawed {
			run.thawAll(context.WithoutCancel(ctx))
		}
	}()

	run.lookupAndPrepare(ctx)
	run.freeze(ctx)

	class, reasons := catalog.ClassApp, run.failures()
	if len(reasons) > 0 {
		class = catalog.ClassCrash
	}
	skip := class == catalog.ClassCrash && svc.Consistency.OnQuiesceFailure == model.Skip
	if len(svc.Apps) == 0 {
		// Nothing vouches for the data beyond write order: say so, but
		// a service of bare volumes is never skipped.
		class, reasons = catalog.ClassCrash, []string{"the service has no app to quiesce"}
	}

	var sm *store.Marker
	var fenceErr error
	if !skip && ctx.Err() == nil {
		ev, err := run.evidence()
		if err != nil {
			reasons = append(reasons, err.Error())
			class = catalog.ClassCrash
		}
		sm, fenceErr = r.Fence.Mark(ctx, store.MarkSpec{Service: svc.Name, Class: class, Volumes: m.Volumes, Evidence: ev})
		if fenceErr == nil && class == catalog.ClassApp {
			// An app whose hold elapsed before the fence may have been
			// thawed by its watchdog: the cut is not app-consistent for
			// it. The journal record says app, the catalog says crash;
			// Reconcile never overrides a catalog record's class.
			if late := run.holdExpired(clk.Now()); late != "" {
				class = catalog.ClassCrash
				reasons = append(reasons, late)
			}
		}
	} else if ctx.Err() != nil {
		fenceErr = fmt.Errorf("marker: service %q: %w", svc.Name, ctx.Err())
	}

	run.thawAll(context.WithoutCancel(ctx))
	thawed = true

	m.Apps = make([]catalog.AppResult, len(run.apps))
	for i, a := range run.apps {
		m.Apps[i] = a.res
	}
	m.FreezeStart, m.FreezeEnd = run.freezeStart, run.thawEnd
	m.Class = class
	m.Reason = strings.Join(reasons, "; ")
	m.Duration = clk.Now().Sub(start)
	events := run.events

	switch {
	case fenceErr != nil:
		events = append(events, catalog.Event{Type: catalog.EventError, Severity: catalog.Error, Service: svc.Name,
			Message: fmt.Sprintf("marker of service %q failed: %v", svc.Name, fenceErr)})
		r.record(ctx, nil, events, clk, log)
		return m, fmt.Errorf("marker: service %q: fence: %w", svc.Name, fenceErr)
	case skip:
		m.Class, m.ID, m.Time = catalog.ClassSkipped, fmt.Sprintf("skip-%d", start.UnixNano()), start
		m.State = ""
		events = append(events, catalog.Event{Type: catalog.EventMarkerSkipped, Severity: catalog.Warning, Service: svc.Name,
			Message: fmt.Sprintf("marker of service %q skipped: %s", svc.Name, m.Reason)})
		err := r.record(ctx, &m, events, clk, log)
		return m, errors.Join(fmt.Errorf("marker: service %q: %w: %s", svc.Name, ErrSkipped, m.Reason), err)
	}
	m.ID, m.Seq, m.Time = sm.ID, sm.Seq, time.Unix(0, sm.TS).UTC()
	sev, msg := catalog.Info, fmt.Sprintf("marker %s of service %q: %s-consistent, freeze window %s", m.ID, svc.Name, m.Class, m.FreezeWindow())
	if m.Class == catalog.ClassCrash {
		sev, msg = catalog.Warning, msg+": "+m.Reason
	}
	data, _ := json.Marshal(map[string]any{"id": m.ID, "class": m.Class, "trigger": trigger})
	events = append(events, catalog.Event{Type: catalog.EventMarker, Severity: sev, Service: svc.Name, Message: msg, Data: data})
	err = r.record(ctx, &m, events, clk, log)
	log.Info("marker", "service", svc.Name, "id", m.ID, "class", m.Class, "freeze_window", m.FreezeWindow(), "reason", m.Reason)
	return m, err
}

func (r *Runner) record(ctx context.Context, m *catalog.Marker, events []catalog.Event, clk clock.Clock, log *slog.Logger) error {
	if r.Catalog == nil {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if m != nil {
		if err := r.Catalog.PutMarker(ctx, *m); err != nil {
			errs = append(errs, fmt.Errorf("marker %s: record: %w", m.ID, err))
		}
	}
	now := clk.Now()
	for _, e := range events {
		if e.Time.IsZero() {
			e.Time = now
		}
		if _, err := r.Catalog.AddEvent(ctx, e); err != nil {
			log.Error("marker: event not recorded", "type", e.Type, "err", err)
		}
	}
	return errors.Join(errs...)
}

type appRun struct {
	app    *model.App
	plugin sdk.Plugin
	res    catalog.AppResult

	prepared     bool
	freezeCalled bool
	freezeStart  time.Time
	freezeDone   chan struct{} // closed when the Freeze call returned
	evidence     sdk.Evidence
	failure      string // why this app is not quiesced
}

type run struct {
	r      *Runner
	svc    *model.Service
	clk    clock.Clock
	log    *slog.Logger
	apps   []*appRun
	levels [][]int

	mu          sync.Mutex
	events      []catalog.Event
	freezeStart time.Time
	thawEnd     time.Time
}

func (x *run) event(e catalog.Event) {
	e.Service, e.Time = x.svc.Name, x.clk.Now()
	x.mu.Lock()
	x.events = append(x.events, e)
	x.mu.Unlock()
}

// call runs f, turning a panic into an error so a broken plugin cannot take
// the daemon (and the thaw of the others) down.
func call(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("plugin panicked: %v\n%s", p, firstLines(debug.Stack(), 12))
		}
	}()
	return f()
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func sdkApp(svc *model.Service, a *model.App) sdk.App {
	cfg := make(sdk.Config, len(a.Config))
	for k, v := range a.Config {
		if s, ok := v.(model.Secret); ok {
			v = s.Reveal()
		}
		cfg[k] = v
	}
	return sdk.App{Service: svc.Name, Name: a.Name, Volumes: append([]string(nil), a.Volumes...), Config: cfg}
}

// lookupAndPrepare finds every app's plugin and prepares all apps in
// parallel. A Prepare that returns an error is an event, not a failure: the
// freeze that follows may just take longer. A Prepare that does not return
// within PrepareTimeout fails the app's quiesce, since its Freeze must not
// run while the Prepare may still.
func (x *run) lookupAndPrepare(ctx context.Context) {
	timeout := x.r.PrepareTimeout
	if timeout <= 0 {
		timeout = DefaultPrepareTimeout
	}
	var wg sync.WaitGroup
	for _, a := range x.apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p sdk.Plugin
			err := call(func() error {
				var err error
				p, err = x.r.Plugins.Plugin(ctx, x.svc, a.app)
				return err
			})
			if err == nil && p == nil {
				err = errors.New("no plugin")
			}
			if err != nil {
				a.failure = fmt.Sprintf("app %q: plugin %q: %v", a.app.Name, a.app.Plugin, err)
				a.res.Error = a.failure
				return
			}
			a.plugin = p
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			t0 := x.clk.Now()
			err = x.bounded(pctx, func() error { return p.Prepare(pctx, sdkApp(x.svc, a.app)) })
			a.res.Prepare = x.clk.Now().Sub(t0)
			a.prepared = err == nil
			if errors.Is(err, errNoAnswer) {
				// Calls on one app are serialised: no Freeze while
				// its Prepare may still run.
				a.failure = fmt.Sprintf("app %q: prepare: %v", a.app.Name, err)
				a.res.Error = a.failure
				return
			}
			if err != nil && !errors.Is(err, sdk.ErrUnsupported) {
				x.event(catalog.Event{Type: catalog.EventPrepareFailed, Severity: catalog.Warning,
					Message: fmt.Sprintf("prepare of app %q failed: %v", a.app.Name, err)})
			}
		}()
	}
	wg.Wait()
}

// bounded runs f and returns its error, or ctx's error once ctx is done even
// if f has not returned (a hung plugin): the goroutine is left to finish.
func (x *run) bounded(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- call(f) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errNoAnswer, ctx.Err())
	}
}

var errNoAnswer = errors.New("no answer in time")

func (x *run) quiesceTimeout() time.Duration {
	if t := x.svc.Consistency.QuiesceTimeout; t > 0 {
		return t
	}
	return DefaultQuiesceTimeout
}

func (x *run) hold() time.Duration {
	if x.r.Hold > 0 {
		return x.r.Hold
	}
	return 2 * x.quiesceTimeout()
}

// freeze freezes level after level under one deadline. Once an app fails,
// the remaining levels are not frozen: the marker is crash-consistent
// whatever they do, and a shorter freeze hurts the applications less.
func (x *run) freeze(ctx context.Context) {
	for _, a := range x.apps {
		if a.failure != "" {
			x.quiesceFailed(a)
			return
		}
	}
	if len(x.apps) == 0 {
		return
	}
	x.freezeStart = x.clk.Now()
	dctx, cancel := context.WithTimeout(ctx, x.quiesceTimeout())
	defer cancel()
	hold := x.hold()
	for _, level := range x.levels {
		var wg sync.WaitGroup
		for _, i := range level {
			a := x.apps[i]
			a.freezeCalled = true
			a.freezeDone = make(chan struct{})
			a.freezeStart = x.clk.Now()
			res := make(chan error, 1)
			go func() {
				defer close(a.freezeDone)
				var ev sdk.Evidence
				err := call(func() error {
					var err error
					ev, err = a.plugin.Freeze(dctx, sdkApp(x.svc, a.app), hold)
					return err
				})
				if err == nil {
					a.evidence = ev
				}
				res <- err
			}()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				select {
				case err = <-res:
				case <-dctx.Done():
					err = fmt.Errorf("no answer within the quiesce deadline of %s: %w", x.quiesceTimeout(), dctx.Err())
				}
				a.res.Freeze = x.clk.Now().Sub(a.freezeStart)
				if err != nil {
					a.failure = fmt.Sprintf("app %q: freeze: %v", a.app.Name, err)
					a.res.Error = a.failure
					return
				}
				a.res.Froze = true
				if b, jerr := json.Marshal(a.evidence); jerr != nil {
					a.failure = fmt.Sprintf("app %q: evidence does not encode as JSON: %v", a.app.Name, jerr)
				} else if len(b) > MaxEvidence {
					a.failure = fmt.Sprintf("app %q: evidence of %d bytes, at most %d allowed", a.app.Name, len(b), MaxEvidence)
				} else {
					a.res.Evidence = b
				}
				if a.failure != "" {
					a.res.Error = a.failure
				}
			}()
		}
		wg.Wait()
		failed := false
		for _, i := range level {
			if x.apps[i].failure != "" {
				x.quiesceFailed(x.apps[i])
				failed = true
			}
		}
		if failed {
			return
		}
	}
}

func (x *run) quiesceFailed(a *appRun) {
	x.event(catalog.Event{Type: catalog.EventQuiesceFailed, Severity: catalog.Warning, Message: a.failure})
}

func (x *run) failures() []string {
	var out []string
	for _, a := range x.apps {
		if a.failure != "" {
			out = append(out, a.failure)
		} else if !a.res.Froze {
			out = append(out, fmt.Sprintf("app %q: not frozen (an earlier app failed)", a.app.Name))
		}
	}
	return out
}

func (x *run) holdExpired(now time.Time) string {
	hold := x.hold()
	for _, a := range x.apps {
		if a.freezeCalled && now.Sub(a.freezeStart) >= hold {
			return fmt.Sprintf("app %q: fence completed %s after its freeze, past the hold of %s", a.app.Name, now.Sub(a.freezeStart).Round(time.Millisecond), hold)
		}
	}
	return ""
}

func (x *run) evidence() ([]byte, error) {
	ev := Evidence{}
	for _, a := range x.apps {
		if a.res.Evidence != nil {
			ev[a.app.Name] = a.res.Evidence
		}
	}
	if len(ev) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	return b, nil
}

// thawAll thaws every app whose Freeze was called, levels in reverse. It is
// idempotent within a run.
func (x *run) thawAll(ctx context.Context) {
	timeout := x.r.ThawTimeout
	if timeout <= 0 {
		timeout = DefaultThawTimeout
	}
	any := false
	for li := len(x.levels) - 1; li >= 0; li-- {
		var wg sync.WaitGroup
		for _, i := range x.levels[li] {
			a := x.apps[i]
			if !a.freezeCalled || a.res.Thawed || a.res.Thaw > 0 {
				continue
			}
			any = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				tctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				t0 := x.clk.Now()
				// Calls on one app are serialised: a Freeze still
				// running (past the deadline) finishes first, then
				// Thaw undoes whatever it did.
				var err error
				select {
				case <-a.freezeDone:
					err = x.bounded(tctx, func() error { return a.plugin.Thaw(tctx, sdkApp(x.svc, a.app)) })
				case <-tctx.Done():
					err = fmt.Errorf("freeze still running after the thaw timeout of %s; the plugin's watchdog must thaw it", timeout)
				}
				a.res.Thaw = max(x.clk.Now().Sub(t0), time.Nanosecond)
				if err != nil {
					msg := fmt.Sprintf("thaw of app %q failed: %v", a.app.Name, err)
					if a.res.Error == "" {
						a.res.Error = msg
					}
					x.log.Error("marker: thaw failed", "app", a.app.Name, "err", err)
					x.event(catalog.Event{Type: catalog.EventThawFailed, Severity: catalog.Error, Message: msg})
					return
				}
				a.res.Thawed = true
			}()
		}
		wg.Wait()
	}
	if any {
		x.thawEnd = x.clk.Now()
	}
}

// freezeLevels groups app indexes into freeze levels (see the package
// comment). It fails on an unknown dependency or a cycle.
func freezeLevels(apps []*model.App) ([][]int, error) {
	idx := map[string]int{}
	for i, a := range apps {
		idx[a.Name] = i
	}
	dependents := make([][]int, len(apps)) // app i -> apps that depend on it
	for i, a := range apps {
		for _, d := range a.DependsOn {
			j, ok := idx[d]
			if !ok {
				return nil, fmt.Errorf("app %q depends on unknown app %q", a.Name, d)
			}
			dependents[j] = append(dependents[j], i)
		}
	}
	level := make([]int, len(apps))
	state := make([]int, len(apps)) // 0 new, 1 visiting, 2 done
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case 1:
			return fmt.Errorf("app %q is part of a depends_on cycle", apps[i].Name)
		case 2:
			return nil
		}
		state[i] = 1
		l := 0
		for _, d := range dependents[i] {
			if err := visit(d); err != nil {
				return err
			}
			l = max(l, level[d]+1)
		}
		level[i], state[i] = l, 2
		return nil
	}
	n := 0
	for i := range apps {
		if err := visit(i); err != nil {
			return nil, err
		}
		n = max(n, level[i]+1)
	}
	out := make([][]int, n)
	for i := range apps {
		out[level[i]] = append(out[level[i]], i)
	}
	for _, l := range out {
		sort.Ints(l)
	}
	return out, nil
}
