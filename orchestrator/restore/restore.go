package restore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/vfs"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Config configures a Restorer. Dir, Engine, Markers and Services are
// required.
type Config struct {
	// Dir holds the restore records.
	Dir      string
	FS       vfs.FS // default vfs.OS
	Engine   Engine
	Markers  MarkerSource
	Services Services
	Events   EventSink   // default: none
	Clock    clock.Clock // default clock.Real
	// PluginTimeout bounds one Stop, Start or Health call (default 2m).
	PluginTimeout time.Duration
	// HealthWait is how long an app may take to report healthy after its
	// start (default 1m).
	HealthWait time.Duration
	// Parallel is how many volumes roll at once (default 4).
	Parallel int
	// RollRate (bytes/s) and AppAllowance (per stop or start) feed the
	// plan's time estimate (defaults 200 MiB/s and 5s).
	RollRate     int64
	AppAllowance time.Duration
}

// Restorer restores services. Its methods are safe for concurrent use; one
// restore per service runs at a time.
type Restorer struct {
	cfg  Config
	recs records

	mu   sync.Mutex
	busy map[string]bool // services with a run in this process
}

// New returns a Restorer, creating cfg.Dir.
func New(cfg Config) (*Restorer, error) {
	if cfg.Dir == "" || cfg.Engine == nil || cfg.Markers == nil || cfg.Services == nil {
		return nil, errors.New("restore: Dir, Engine, Markers and Services are required")
	}
	if cfg.FS == nil {
		cfg.FS = vfs.OS{}
	}
	if cfg.Events == nil {
		cfg.Events = EventFunc(func(context.Context, Event) {})
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.PluginTimeout <= 0 {
		cfg.PluginTimeout = 2 * time.Minute
	}
	if cfg.HealthWait <= 0 {
		cfg.HealthWait = time.Minute
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.RollRate <= 0 {
		cfg.RollRate = 200 << 20
	}
	if cfg.AppAllowance <= 0 {
		cfg.AppAllowance = 5 * time.Second
	}
	if err := vfs.MkdirAllDurable(cfg.FS, cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("restore records %s: %w", cfg.Dir, err)
	}
	return &Restorer{cfg: cfg, recs: records{fs: cfg.FS, dir: cfg.Dir}, busy: map[string]bool{}}, nil
}

// Plan is what a restore would do; making it changes nothing.
type Plan struct {
	Service         string `json:"service"`
	Kind            string `json:"kind"`
	CrashConsistent bool   `json:"crash_consistent"`
	// Requested is the time asked for (zero when a marker was named).
	Requested time.Time `json:"requested,omitzero"`
	Target    int64     `json:"target"`
	// TargetTime is Target as a time.
	TargetTime time.Time `json:"target_time"`
	// Marker is the marker chosen, nil for an exact time.
	Marker *Marker `json:"marker,omitempty"`
	// Distance is how far the target lies before the requested time.
	Distance time.Duration `json:"distance"`
	Volumes  []VolumePlan  `json:"volumes"`
	Bytes    int64         `json:"bytes"`
	Stop     []string      `json:"stop"`  // in this order
	Start    []string      `json:"start"` // in this order
	Estimate time.Duration `json:"estimate"`
	Warnings []string      `json:"warnings,omitempty"`
}

// VolumePlan is one volume of a plan.
type VolumePlan struct {
	Name string `json:"name"`
	// Bytes is what the roll will rewrite: blocks changed since the
	// target times the block size.
	Bytes int64 `json:"bytes"`
}

// Plan says what Restore would do with service and t.
func (r *Restorer) Plan(ctx context.Context, service string, t Target) (*Plan, error) {
	svc, err := r.cfg.Services.Service(ctx, service)
	if err != nil {
		return nil, err
	}
	return r.plan(ctx, svc, KindService, svc.Volumes, svc.Apps, t)
}

// PlanVolume says what RestoreVolume would do.
func (r *Restorer) PlanVolume(ctx context.Context, service, volume string, t Target) (*Plan, error) {
	svc, err := r.cfg.Services.Service(ctx, service)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(svc.Volumes, volume) {
		return nil, fmt.Errorf("restore: service %q has no volume %q", service, volume)
	}
	return r.plan(ctx, svc, KindVolume, []string{volume}, appsOn(svc, volume), t)
}

func (r *Restorer) plan(ctx context.Context, svc Service, kind string, vols []string, apps []App, t Target) (*Plan, error) {
	now, err := r.cfg.Engine.Now(ctx)
	if err != nil {
		return nil, err
	}
	pt, err := resolve(ctx, r.cfg.Markers, svc.Name, t, now)
	if err != nil {
		return nil, err
	}
	p := &Plan{Service: svc.Name, Kind: kind, CrashConsistent: t.Marker == "" && t.CrashConsistent,
		Target: pt.TS, TargetTime: time.Unix(0, pt.TS).UTC(), Marker: pt.Marker}
	if t.Marker == "" {
		p.Requested = t.Time
		p.Distance = time.Duration(t.Time.UnixNano() - pt.TS)
	}
	if pt.Marker != nil && pt.Marker.Class != ClassApp {
		p.Warnings = append(p.Warnings, fmt.Sprintf("marker %s is %s-consistent: the apps recover as after a power loss", pt.Marker.ID, pt.Marker.Class))
	}
	if kind == KindVolume {
		p.Warnings = append(p.Warnings, volumeWarning(vols[0], svc.Name))
	}
	for _, name := range vols {
		v, err := r.cfg.Engine.Volume(name)
		if err != nil {
			return nil, fmt.Errorf("restore: service %q: %w", svc.Name, err)
		}
		n, err := v.ChangedSince(ctx, pt.TS)
		if err != nil {
			return nil, fmt.Errorf("restore: service %q: volume %q at %s: %w", svc.Name, name, p.TargetTime.Format(time.RFC3339Nano), err)
		}
		p.Volumes = append(p.Volumes, VolumePlan{Name: name, Bytes: n})
		p.Bytes += n
	}
	for i := len(apps) - 1; i >= 0; i-- {
		p.Stop = append(p.Stop, apps[i].Name())
	}
	for _, a := range apps {
		p.Start = append(p.Start, a.Name())
	}
	p.Estimate = time.Duration(float64(p.Bytes)/float64(r.cfg.RollRate)*float64(time.Second)) +
		time.Duration(2*len(apps))*r.cfg.AppAllowance
	return p, nil
}

func volumeWarning(volume, service string) string {
	return fmt.Sprintf("volume %q is restored alone: the other volumes of service %q stay as they are, so the service is no longer consistent at one point in time", volume, service)
}

// Error is a restore that stopped part-way. Its record says what was done.
type Error struct {
	Record *Record
	Step   string
	Object string
	Err    error
}

func (e *Error) Error() string {
	obj := ""
	if e.Object != "" {
		obj = " " + quote(e.Object)
	}
	return fmt.Sprintf("%s failed at %s%s: %v; %s; resume with `lockstep restore %s --resume %s` or return to before it with `lockstep restore %s --undo`",
		e.Record.Kind+" restore "+e.Record.ID, e.Step, obj, e.Err, e.Record.Summary(), e.Record.Service, e.Record.ID, e.Record.Service)
}

func (e *Error) Unwrap() error { return e.Err }

// Restore restores service in place to t: stop apps (reverse dependency
// order), fence and roll every volume, unfence, start apps (dependency
// order), check health. On failure the returned error is an *Error and the
// record stays for Resume or Undo.
func (r *Restorer) Restore(ctx context.Context, service string, t Target, progress func(Progress)) (*Record, error) {
	svc, err := r.cfg.Services.Service(ctx, service)
	if err != nil {
		return nil, err
	}
	return r.start(ctx, svc, KindService, svc.Volumes, svc.Apps, t, progress)
}

// RestoreVolume restores one volume of service to t, stopping and starting
// the apps that live on it. The record carries a warning: the service is no
// longer consistent at one point in time.
func (r *Restorer) RestoreVolume(ctx context.Context, service, volume string, t Target, progress func(Progress)) (*Record, error) {
	svc, err := r.cfg.Services.Service(ctx, service)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(svc.Volumes, volume) {
		return nil, fmt.Errorf("restore: service %q has no volume %q", service, volume)
	}
	return r.start(ctx, svc, KindVolume, []string{volume}, appsOn(svc, volume), t, progress)
}

func (r *Restorer) start(ctx context.Context, svc Service, kind string, vols []string, apps []App, t Target, progress func(Progress)) (*Record, error) {
	if err := r.lock(svc.Name); err != nil {
		return nil, err
	}
	defer r.unlock(svc.Name)
	if err := r.checkNoUnfinished(svc.Name); err != nil {
		return nil, err
	}
	now, err := r.cfg.Engine.Now(ctx)
	if err != nil {
		return nil, err
	}
	pt, err := resolve(ctx, r.cfg.Markers, svc.Name, t, now)
	if err != nil {
		return nil, err
	}
	created := r.cfg.Clock.Now()
	rec := &Record{ID: newID(created), Kind: kind, Service: svc.Name, Target: pt.TS, Marker: pt.Marker,
		Volumes: slices.Clone(vols), State: StateRunning, Created: created, Updated: created}
	for _, a := range apps {
		rec.Apps = append(rec.Apps, a.Name())
	}
	if kind == KindVolume {
		rec.Warnings = append(rec.Warnings, volumeWarning(vols[0], svc.Name))
	}
	if err := r.recs.save(rec); err != nil {
		return nil, err
	}
	return rec, r.execute(ctx, rec, apps, progress)
}

// Resume continues the unfinished restore id (after a failure, or after
// its process died): apps are stopped again, volumes not rolled yet (or
// written to since their roll) are rolled, then apps start and are checked.
func (r *Restorer) Resume(ctx context.Context, id string, progress func(Progress)) (*Record, error) {
	rec, err := r.recs.load(id)
	if err != nil {
		return nil, err
	}
	if err := r.lock(rec.Service); err != nil {
		return nil, err
	}
	defer r.unlock(rec.Service)
	if rec, err = r.recs.load(id); err != nil {
		return nil, err
	}
	if rec.Finished() {
		return rec, nil
	}
	if rec.UndoneBy != "" {
		return rec, fmt.Errorf("restore: %s was undone by %s; resume that instead", rec.ID, rec.UndoneBy)
	}
	apps, err := r.apps(ctx, rec)
	if err != nil {
		return rec, err
	}
	rec.State, rec.Error = StateRunning, ""
	return rec, r.execute(ctx, rec, apps, progress)
}

// Undo returns service to the state just before its newest in-place
// restore (whole service or single volume), with the same stop and start
// around the roll. An unfinished undo is resumed. A restore that failed
// before any roll is undone by starting its apps again.
func (r *Restorer) Undo(ctx context.Context, service string, progress func(Progress)) (*Record, error) {
	if err := r.lock(service); err != nil {
		return nil, err
	}
	defer r.unlock(service)
	all, err := r.recs.list(service)
	if err != nil {
		return nil, err
	}
	var last *Record
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Kind == KindUndo && !all[i].Finished() {
			u := all[i]
			apps, err := r.apps(ctx, u)
			if err != nil {
				return u, err
			}
			u.State, u.Error = StateRunning, ""
			return u, r.execute(ctx, u, apps, progress)
		}
		if all[i].Kind != KindUndo {
			last = all[i]
			break
		}
	}
	if last == nil || last.UndoneBy != "" || last.State == StateUndone {
		return nil, fmt.Errorf("%w: service %q has no restore left to undo", ErrNothingTo, service)
	}
	created := r.cfg.Clock.Now()
	u := &Record{ID: newID(created), Kind: KindUndo, Service: service, Target: last.UndoPoint, Undoes: last.ID,
		Apps: slices.Clone(last.Apps), State: StateRunning, Created: created, Updated: created}
	if last.UndoPoint != 0 {
		u.Volumes = slices.Clone(last.Volumes)
	}
	apps, err := r.apps(ctx, u)
	if err != nil {
		return nil, err
	}
	if err := r.recs.save(u); err != nil {
		return nil, err
	}
	last.UndoneBy = u.ID
	last.Updated = created
	if err := r.recs.save(last); err != nil {
		return nil, err
	}
	return u, r.execute(ctx, u, apps, progress)
}

// Records lists the restore records of service (all when empty), oldest
// first.
func (r *Restorer) Records(service string) ([]*Record, error) { return r.recs.list(service) }

// Record returns the record id.
func (r *Restorer) Record(id string) (*Record, error) { return r.recs.load(id) }

// Reopen is for a process starting up: it fences again the volumes of
// every unfinished restore that was rolling them (fencing does not survive
// a restart) and returns the unfinished records, to be resumed or undone.
func (r *Restorer) Reopen(ctx context.Context) ([]*Record, error) {
	all, err := r.recs.list("")
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, rec := range all {
		if rec.Finished() || rec.UndoneBy != "" {
			continue
		}
		out = append(out, rec)
		if !rec.Fenced {
			continue
		}
		for _, name := range rec.Volumes {
			v, err := r.cfg.Engine.Volume(name)
			if err != nil {
				return out, fmt.Errorf("restore %s: %w", rec.ID, err)
			}
			v.SetFenced(true)
		}
	}
	return out, nil
}

func (r *Restorer) lock(service string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy[service] {
		return fmt.Errorf("%w: a restore of service %q is running", ErrInProgress, service)
	}
	r.busy[service] = true
	return nil
}

func (r *Restorer) unlock(service string) {
	r.mu.Lock()
	delete(r.busy, service)
	r.mu.Unlock()
}

func (r *Restorer) checkNoUnfinished(service string) error {
	all, err := r.recs.list(service)
	if err != nil {
		return err
	}
	for _, rec := range all {
		if !rec.Finished() && rec.UndoneBy == "" {
			return fmt.Errorf("%w: %s; resume it with `lockstep restore %s --resume %s` or undo it with `lockstep restore %s --undo`",
				ErrInProgress, rec.Summary(), service, rec.ID, service)
		}
	}
	return nil
}

// apps resolves the apps a record names, in its order.
func (r *Restorer) apps(ctx context.Context, rec *Record) ([]App, error) {
	svc, err := r.cfg.Services.Service(ctx, rec.Service)
	if err != nil {
		return nil, err
	}
	var out []App
	for _, name := range rec.Apps {
		i := slices.IndexFunc(svc.Apps, func(a App) bool { return a.Name() == name })
		if i < 0 {
			return nil, fmt.Errorf("restore %s: service %q has no app %q any more", rec.ID, rec.Service, name)
		}
		out = append(out, svc.Apps[i])
	}
	return out, nil
}

// run is one execution of a record.
type run struct {
	r        *Restorer
	rec      *Record
	progress func(Progress)
	began    time.Time
	n, total int
	mu       sync.Mutex // guards rec and n while volumes roll in parallel
	progMu   sync.Mutex // one progress call at a time
}

func (x *run) report(p Progress) {
	if x.progress == nil {
		return
	}
	x.progMu.Lock()
	defer x.progMu.Unlock()
	x.progress(p)
}

func (x *run) save() error {
	x.rec.Updated = x.r.cfg.Clock.Now()
	return x.r.recs.save(x.rec)
}

// step runs fn as one step: progress, event, record.
func (x *run) step(ctx context.Context, name, object string, bytes int64, fn func() (string, error)) error {
	x.mu.Lock()
	x.n++
	n := x.n
	x.mu.Unlock()
	x.report(Progress{Step: name, Object: object, N: n, Total: x.total, Bytes: bytes, Elapsed: time.Since(x.began)})
	t := x.r.cfg.Clock.Now()
	start := time.Now()
	detail, err := fn()
	d := time.Since(start)
	outcome := OK
	switch {
	case errors.Is(err, errSkipped):
		outcome, err = Skipped, nil
	case err != nil:
		outcome = Failed
	}
	ev := Event{Restore: x.rec.ID, Service: x.rec.Service, Step: name, Object: object, Outcome: outcome, Started: t, Duration: d, Detail: detail}
	sr := StepRecord{Step: name, Object: object, Outcome: outcome, Duration: d}
	if err != nil {
		ev.Error, sr.Error = err.Error(), err.Error()
	}
	x.r.cfg.Events.Event(ctx, ev)
	x.mu.Lock()
	x.rec.Steps = append(x.rec.Steps, sr)
	x.mu.Unlock()
	x.report(Progress{Step: name, Object: object, Done: true, Outcome: outcome, N: n, Total: x.total, Bytes: bytes, Elapsed: time.Since(x.began)})
	if err != nil {
		return &Error{Record: x.rec, Step: name, Object: object, Err: err}
	}
	return nil
}

var errSkipped = errors.New("skipped")

func (r *Restorer) pluginCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.PluginTimeout)
}

// execute runs, or continues, a record to its end. Every phase is
// idempotent, so a resumed record runs again every phase that did not
// finish.
func (r *Restorer) execute(ctx context.Context, rec *Record, apps []App, progress func(Progress)) (err error) {
	x := &run{r: r, rec: rec, progress: progress, began: time.Now()}
	defer func() {
		x.mu.Lock()
		rec.Duration += time.Since(x.began)
		if err != nil {
			rec.State, rec.Error = StateFailed, err.Error()
			var e *Error
			if !errors.As(err, &e) {
				err = &Error{Record: rec, Step: "record", Err: err}
			}
		}
		x.mu.Unlock()
		if serr := x.save(); serr != nil && err == nil {
			err = serr
		}
	}()
	rolling := len(rec.NotRolled()) > 0 || rec.Fenced
	var vols []Volume
	for _, name := range rec.Volumes {
		v, err := r.cfg.Engine.Volume(name)
		if err != nil {
			return fmt.Errorf("restore %s: %w", rec.ID, err)
		}
		vols = append(vols, v)
	}
	if rolling {
		x.total = len(apps) + 2 + len(vols)
	}
	x.total += 1 + 2*len(apps)

	if rolling {
		// Stop every app, also those a crashed run had stopped: nothing
		// fenced their volumes while this process was not running.
		for i := len(apps) - 1; i >= 0; i-- {
			a := apps[i]
			if err := x.step(ctx, "stop", a.Name(), 0, func() (string, error) {
				pctx, cancel := r.pluginCtx(ctx)
				defer cancel()
				err := a.Plugin.Stop(pctx, a.App)
				if errors.Is(err, sdk.ErrUnsupported) {
					// Rolling a volume under a running app would show it data
					// changing beneath it: refuse rather than skip.
					return "", fmt.Errorf("stop app %q: its plugin cannot stop it (for exec apps, configure `stop` and `start` commands): %w", a.Name(), err)
				}
				if err != nil {
					return "", fmt.Errorf("stop app %q: %w", a.Name(), err)
				}
				x.rec.Stopped = addOnce(x.rec.Stopped, a.Name())
				return "", x.save()
			}); err != nil {
				return err
			}
		}
		if err := x.step(ctx, "fence", "", 0, func() (string, error) {
			x.rec.Fenced = true
			if err := x.save(); err != nil {
				return "", err
			}
			for _, v := range vols {
				v.SetFenced(true)
			}
			return fmt.Sprintf("%d volumes refuse I/O", len(vols)), nil
		}); err != nil {
			return err
		}
		if err := x.step(ctx, "undo-point", "", 0, func() (string, error) {
			if x.rec.UndoPoint != 0 {
				return "kept " + fmtTS(x.rec.UndoPoint), errSkipped
			}
			now, err := r.cfg.Engine.Now(ctx)
			if err != nil {
				return "", err
			}
			x.rec.UndoPoint = now
			return fmtTS(now), x.save()
		}); err != nil {
			return err
		}
		if err := x.roll(ctx, vols); err != nil {
			return err
		}
	}
	if err := x.step(ctx, "unfence", "", 0, func() (string, error) {
		for _, v := range vols {
			v.SetFenced(false)
		}
		x.rec.Fenced = false
		return "", x.save()
	}); err != nil {
		return err
	}
	for _, a := range apps {
		if err := x.step(ctx, "start", a.Name(), 0, func() (string, error) {
			pctx, cancel := r.pluginCtx(ctx)
			defer cancel()
			err := a.Plugin.Start(pctx, a.App)
			if errors.Is(err, sdk.ErrUnsupported) {
				x.rec.Warnings = addOnce(x.rec.Warnings, fmt.Sprintf("app %q: its plugin cannot start it; start it by hand", a.Name()))
				return "plugin cannot start apps", errSkipped
			}
			if err != nil {
				return "", fmt.Errorf("start app %q: %w", a.Name(), err)
			}
			x.rec.Stopped = remove(x.rec.Stopped, a.Name())
			return "", x.save()
		}); err != nil {
			return err
		}
	}
	x.rec.Healthy = nil
	for _, a := range apps {
		if err := x.step(ctx, "health", a.Name(), 0, func() (string, error) { return x.health(ctx, a) }); err != nil {
			return err
		}
	}
	x.rec.State = StateDone
	if rec.Kind == KindUndo && rec.Undoes != "" {
		if u, err := r.recs.load(rec.Undoes); err == nil {
			u.State, u.Updated = StateUndone, r.cfg.Clock.Now()
			if err := r.recs.save(u); err != nil {
				return err
			}
		}
	}
	return nil
}

// roll rolls every volume not rolled yet, a few at once.
func (x *run) roll(ctx context.Context, vols []Volume) error {
	var todo []Volume
	for _, v := range vols {
		done, rolled := x.rec.Rolled[v.Name()]
		if rolled {
			// Nothing may have written since (fenced); if something did
			// while no process held the fence, roll again.
			n, err := v.ChangedSince(ctx, done.At)
			if err != nil {
				return &Error{Record: x.rec, Step: "roll", Object: v.Name(), Err: err}
			}
			if n == 0 {
				x.step(ctx, "roll", v.Name(), 0, func() (string, error) { return "rolled already", errSkipped })
				continue
			}
		}
		todo = append(todo, v)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, x.r.cfg.Parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, v := range todo {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := x.rollOne(ctx, v); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func (x *run) rollOne(ctx context.Context, v Volume) error {
	// What the roll will move, for the progress line only: it costs an
	// index scan.
	var bytes int64
	if x.progress != nil {
		n, err := v.ChangedSince(ctx, x.rec.Target)
		if err != nil {
			return &Error{Record: x.rec, Step: "roll", Object: v.Name(), Err: fmt.Errorf("volume %q: %w", v.Name(), err)}
		}
		bytes = n
	}
	return x.step(ctx, "roll", v.Name(), bytes, func() (string, error) {
		n, err := v.RollTo(ctx, x.rec.Target)
		if err != nil {
			return "", fmt.Errorf("roll volume %q to %s: %w", v.Name(), fmtTS(x.rec.Target), err)
		}
		at, err := x.r.cfg.Engine.Now(ctx)
		if err != nil {
			return "", err
		}
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.rec.Rolled == nil {
			x.rec.Rolled = map[string]RolledVolume{}
		}
		x.rec.Rolled[v.Name()] = RolledVolume{Bytes: n, At: at}
		return fmt.Sprintf("%d bytes rewritten", n), x.save()
	})
}

// health polls an app's health until it is OK or HealthWait passes.
func (x *run) health(ctx context.Context, a App) (string, error) {
	deadline := time.Now().Add(x.r.cfg.HealthWait)
	for {
		pctx, cancel := x.r.pluginCtx(ctx)
		h, err := a.Plugin.Health(pctx, a.App)
		cancel()
		if errors.Is(err, sdk.ErrUnsupported) {
			x.rec.Warnings = addOnce(x.rec.Warnings, fmt.Sprintf("app %q: its plugin has no health check", a.Name()))
			return "plugin has no health check", errSkipped
		}
		if err == nil && h.OK {
			x.rec.Healthy = addOnce(x.rec.Healthy, a.Name())
			return h.Detail, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("app %q is not healthy after %s: %s", a.Name(), x.r.cfg.HealthWait, h.Detail)
			} else {
				err = fmt.Errorf("health of app %q: %w", a.Name(), err)
			}
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func fmtTS(ts int64) string { return time.Unix(0, ts).UTC().Format(time.RFC3339Nano) }

// AsNew is the result of RestoreAsNew.
type AsNew struct {
	Plan *Plan `json:"plan"`
	// Volumes maps each volume of the service to its new clone's name.
	Volumes []Clone `json:"volumes"`
}

// Clone is one new volume.
type Clone struct {
	Source string `json:"source"`
	Name   string `json:"name"`
}

// RestoreAsNew presents every volume of service at t as a new copy-on-write
// volume named volume+suffix; the service itself is not touched and nothing
// is copied. If one clone fails, the ones made are deleted.
func (r *Restorer) RestoreAsNew(ctx context.Context, service string, t Target, suffix string) (*AsNew, error) {
	if suffix == "" {
		return nil, errors.New("restore: --as-new needs a non-empty suffix")
	}
	p, err := r.Plan(ctx, service, t)
	if err != nil {
		return nil, err
	}
	out := &AsNew{Plan: p}
	for _, vp := range p.Volumes {
		name := vp.Name + suffix
		t0 := r.cfg.Clock.Now()
		start := time.Now()
		err := r.cfg.Engine.Clone(ctx, vp.Name, p.Target, name)
		ev := Event{Service: service, Step: "clone", Object: name, Outcome: OK, Started: t0, Duration: time.Since(start), Detail: "of " + vp.Name + " at " + fmtTS(p.Target)}
		if err != nil {
			ev.Outcome, ev.Error = Failed, err.Error()
		}
		r.cfg.Events.Event(ctx, ev)
		if err != nil {
			var errs []error
			for _, c := range out.Volumes {
				if derr := r.cfg.Engine.Delete(context.WithoutCancel(ctx), c.Name); derr != nil {
					errs = append(errs, fmt.Errorf("delete clone %q: %w", c.Name, derr))
				}
			}
			return nil, errors.Join(append([]error{fmt.Errorf("restore: service %q as new: clone %q of %q: %w", service, name, vp.Name, err)}, errs...)...)
		}
		out.Volumes = append(out.Volumes, Clone{Source: vp.Name, Name: name})
	}
	return out, nil
}
