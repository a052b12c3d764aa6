package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

// RestoreDir holds the restore records in the data directory.
const RestoreDir = "restores"

// Event types of restores in the catalog.
const (
	EventRestore           = "restore"            // one step of a restore ended
	EventRestoreUnfinished = "restore_unfinished" // found at start: resume or undo it
)

// restores runs package restore inside the daemon: services come from the
// applied policy with store volume names, plugins from the daemon's plugin
// host, markers (and their class) from the catalog, and every step ends as
// a catalog event. Restores run on the daemon's context, not a request's,
// so a client that disconnects does not stop one half-way; Close cancels
// the running ones (their records make them resumable) and waits.
type restores struct {
	d      *Daemon
	r      *restore.Restorer
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and wg.Add against close
	closed bool
	wg     sync.WaitGroup
	// onEvent, set by tests, sees every event as it is recorded.
	onEvent atomic.Pointer[func(restore.Event)]
}

// restoreBackend is what the default protector offers restores beyond the
// Protector interface: the plugin host and the catalog's event log.
type restoreBackend interface {
	Plugin(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error)
	AddEvent(ctx context.Context, e catalog.Event) (catalog.Event, error)
}

func (p *protector) Plugin(ctx context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error) {
	return p.plugins.Plugin(ctx, svc, app)
}

func (p *protector) AddEvent(ctx context.Context, e catalog.Event) (catalog.Event, error) {
	return p.cat.AddEvent(ctx, e)
}

// openRestores makes the daemon's restorer and reopens unfinished restores:
// their volumes are fenced again, and each is logged and recorded as an
// event with the commands that resume or undo it.
func (d *Daemon) openRestores(ctx context.Context) error {
	rs := &restores{d: d}
	rs.ctx, rs.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r, err := restore.New(restore.Config{
		Dir:      filepath.Join(d.cfg.DataDir, RestoreDir),
		Engine:   restore.StoreEngine{Store: d.st},
		Markers:  catalogMarkers{d: d},
		Services: policyServices{d: d},
		Events:   restore.EventFunc(rs.event),
		Clock:    d.clk,
	})
	if err != nil {
		rs.cancel()
		return err
	}
	rs.r = r
	d.rs = rs
	open, err := r.Reopen(ctx)
	for _, rec := range open {
		msg := fmt.Sprintf("unfinished restore found at start: %s; resume it with `lockstep restore --resume %s` or undo it with `lockstep restore %s --undo`",
			rec.Summary(), rec.ID, rec.Service)
		d.log.Warn(msg, "restore", rec.ID, "service", rec.Service)
		rs.addEvent(catalog.Event{Type: EventRestoreUnfinished, Severity: catalog.Warning, Service: rec.Service, Message: msg, Data: mustJSON(rec)})
	}
	if err != nil {
		// A record whose volume is gone cannot keep the daemon down; say
		// so loudly instead: the volumes of the records after it are not
		// fenced again.
		msg := fmt.Sprintf("unfinished restores could not all be fenced again: %v; resume or undo them (see `lockstep restores`)", err)
		d.log.Error(msg)
		rs.addEvent(catalog.Event{Type: catalog.EventError, Severity: catalog.Error, Message: msg})
	}
	return nil
}

// close cancels the running restores and waits for them. It is safe to
// call twice.
func (rs *restores) close() {
	rs.mu.Lock()
	rs.closed = true
	rs.mu.Unlock()
	rs.cancel()
	rs.wg.Wait()
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func (rs *restores) addEvent(e catalog.Event) {
	b, ok := rs.d.prot.(restoreBackend)
	if !ok {
		return
	}
	if e.Time.IsZero() {
		e.Time = rs.d.clk.Now()
	}
	if _, err := b.AddEvent(context.WithoutCancel(rs.ctx), e); err != nil {
		rs.d.log.Error("restore event not recorded", "type", e.Type, "service", e.Service, "err", err)
	}
}

// event records one restore step in the catalog and the log.
func (rs *restores) event(_ context.Context, e restore.Event) {
	if f := rs.onEvent.Load(); f != nil {
		(*f)(e)
	}
	sev := catalog.Info
	switch e.Outcome {
	case restore.Failed:
		sev = catalog.Error
	case restore.Skipped:
		sev = catalog.Warning
	}
	what := e.Step
	if e.Object != "" {
		what += " " + e.Object
	}
	id := e.Restore
	if id == "" {
		id = "as-new"
	}
	msg := fmt.Sprintf("restore %s: %s %s in %s", id, what, e.Outcome, e.Duration.Round(time.Millisecond))
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Error != "" {
		msg += ": " + e.Error
	}
	rs.addEvent(catalog.Event{Time: e.Started.Add(e.Duration), Type: EventRestore, Severity: sev, Service: e.Service, Message: msg, Data: mustJSON(e)})
	if e.Outcome == restore.Failed {
		rs.d.log.Error("restore step failed", "restore", e.Restore, "service", e.Service, "step", e.Step, "object", e.Object, "err", e.Error)
	} else {
		rs.d.log.Info("restore step", "restore", e.Restore, "service", e.Service, "step", e.Step, "object", e.Object, "outcome", e.Outcome, "duration", e.Duration)
	}
}

// catalogMarkers lists markers from the catalog, where the class is
// authoritative (a marker whose freeze outran its hold is crash there even
// if the journal says app); only restorable markers are listed.
type catalogMarkers struct{ d *Daemon }

func (m catalogMarkers) Markers(ctx context.Context, service string) ([]restore.Marker, error) {
	ms, err := m.d.prot.Markers(ctx, service, time.Time{})
	if err != nil {
		return nil, err
	}
	out := make([]restore.Marker, 0, len(ms))
	for _, cm := range ms {
		if !cm.Restorable() {
			continue
		}
		rm := restore.Marker{ID: cm.ID, Service: cm.Service, TS: cm.Time.UnixNano(), Class: cm.Class}
		ev := map[string]any{}
		for _, a := range cm.Apps {
			if len(a.Evidence) > 0 {
				ev[a.App] = a.Evidence
			}
		}
		if cm.Reason != "" {
			ev["reason"] = cm.Reason
		}
		if len(ev) > 0 {
			rm.Evidence = mustJSON(ev)
		}
		out = append(out, rm)
	}
	return out, nil
}

// policyServices resolves services from the applied policy, with volumes
// and apps named as the store and package protect name them.
type policyServices struct{ d *Daemon }

func (p policyServices) Service(ctx context.Context, name string) (restore.Service, error) {
	p.d.mu.Lock()
	ap := p.d.applied
	p.d.mu.Unlock()
	var svc *model.Service
	if ap != nil && ap.pol != nil {
		if s := ap.pol.Service(name); s != nil {
			svc = storeNames(&model.Policy{Services: []*model.Service{s}}).Services[0]
		}
	}
	if svc == nil {
		return restore.Service{}, fmt.Errorf("no service %q in the applied policy (see `lockstep services`): %w", name, errNotFound)
	}
	out := restore.Service{Name: svc.Name}
	for _, v := range svc.Volumes {
		out.Volumes = append(out.Volumes, v.Name)
	}
	apps := dependencyOrder(svc.Apps)
	if len(apps) == 0 {
		return out, nil
	}
	b, ok := p.d.prot.(restoreBackend)
	if !ok {
		return restore.Service{}, fmt.Errorf("service %q: the %s orchestrator cannot stop and start apps", name, p.d.prot.Kind())
	}
	for _, a := range apps {
		pl, err := b.Plugin(ctx, svc, a)
		if err != nil {
			return restore.Service{}, fmt.Errorf("service %q: %w", name, err)
		}
		out.Apps = append(out.Apps, restore.App{Plugin: pl, App: sdkApp(svc, a), Volumes: append([]string(nil), a.Volumes...)})
	}
	return out, nil
}

// sdkApp is the app as its plugin sees it, the same as the marker protocol
// hands it to Freeze (volumes by store name).
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

// dependencyOrder sorts apps so that every app comes after the apps it
// depends on, keeping the policy's order otherwise. Validation refuses
// cycles; an app left in one anyway goes last.
func dependencyOrder(apps []*model.App) []*model.App {
	placed := map[string]bool{}
	var out []*model.App
	for len(out) < len(apps) {
		progress := false
		for _, a := range apps {
			if placed[a.Name] {
				continue
			}
			ready := true
			for _, dep := range a.DependsOn {
				if !placed[dep] {
					ready = false
				}
			}
			if ready {
				placed[a.Name] = true
				out = append(out, a)
				progress = true
			}
		}
		if !progress {
			for _, a := range apps {
				if !placed[a.Name] {
					placed[a.Name] = true
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// target reads a request's point.
func (d *Daemon) restoreTarget(req api.RestoreRequest) (restore.Target, error) {
	t := restore.Target{Marker: req.Marker, CrashConsistent: req.CrashConsistent}
	switch {
	case req.Marker != "" && req.At != "":
		return t, errors.New("restore: give a time or a marker, not both")
	case req.Marker == "" && req.At == "":
		return t, errors.New("restore: give --to TIME or --to MARKER")
	case req.At != "":
		at, err := restore.ParseTime(req.At, d.clk.Now(), time.Local)
		if err != nil {
			return t, err
		}
		t.Time = at
	}
	return t, nil
}

// restoreVolume resolves a request's volume to its store name.
func restoreVolume(service, volume string) string {
	if volume == "" || strings.Contains(volume, "/") {
		return volume
	}
	return VolumeName(service, volume)
}

func (d *Daemon) restoreRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/services/{service}/restore/plan", d.postRestorePlan)
	mux.HandleFunc("POST /v1/services/{service}/restore", d.postRestore)
	mux.HandleFunc("POST /v1/services/{service}/undo", func(w http.ResponseWriter, r *http.Request) {
		svc := r.PathValue("service")
		if _, err := (policyServices{d: d}).Service(r.Context(), svc); err != nil {
			reply(w, nil, err)
			return
		}
		d.rs.stream(w, r, func(ctx context.Context, progress func(restore.Progress)) api.RestoreLine {
			return d.holding(ctx, svc, "an undo is rolling its volumes", func() api.RestoreLine {
				rec, err := d.rs.r.Undo(ctx, svc, progress)
				return recordLine(rec, err)
			})
		})
	})
	mux.HandleFunc("POST /v1/restores/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		old, err := d.rs.r.Record(id)
		if err != nil {
			reply(w, nil, fmt.Errorf("%w (see `lockstep restores`): %w", err, errNotFound))
			return
		}
		d.rs.stream(w, r, func(ctx context.Context, progress func(restore.Progress)) api.RestoreLine {
			return d.holding(ctx, old.Service, "restore "+id+" is rolling its volumes", func() api.RestoreLine {
				rec, err := d.rs.r.Resume(ctx, id, progress)
				return recordLine(rec, err)
			})
		})
	})
	mux.HandleFunc("GET /v1/restores", func(w http.ResponseWriter, r *http.Request) {
		recs, err := d.rs.r.Records(r.URL.Query().Get("service"))
		if recs == nil {
			recs = []*restore.Record{}
		}
		reply(w, recs, err)
	})
	mux.HandleFunc("GET /v1/restores/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := d.rs.r.Record(r.PathValue("id"))
		if err != nil {
			err = fmt.Errorf("%w: %w", err, errNotFound)
		}
		reply(w, rec, err)
	})
}

func (d *Daemon) postRestorePlan(w http.ResponseWriter, r *http.Request) {
	var req api.RestoreRequest
	if !decode(w, r, &req) {
		return
	}
	svc := r.PathValue("service")
	t, err := d.restoreTarget(req)
	if err != nil {
		reply(w, nil, err)
		return
	}
	var p *restore.Plan
	if req.Volume != "" {
		p, err = d.rs.r.PlanVolume(r.Context(), svc, restoreVolume(svc, req.Volume), t)
	} else {
		p, err = d.rs.r.Plan(r.Context(), svc, t)
	}
	reply(w, p, err)
}

func (d *Daemon) postRestore(w http.ResponseWriter, r *http.Request) {
	var req api.RestoreRequest
	if !decode(w, r, &req) {
		return
	}
	svc := r.PathValue("service")
	t, err := d.restoreTarget(req)
	if err == nil && req.AsNew != "" && req.Volume != "" {
		err = errors.New("restore: --as-new restores every volume of a service; expose one volume with `lockstep volume expose --writable`")
	}
	if err == nil {
		_, err = (policyServices{d: d}).Service(r.Context(), svc)
	}
	if err != nil {
		reply(w, nil, err)
		return
	}
	d.rs.stream(w, r, func(ctx context.Context, progress func(restore.Progress)) api.RestoreLine {
		switch {
		case req.AsNew != "":
			res, err := d.restoreAsNew(ctx, svc, t, req.AsNew, progress)
			if err != nil {
				return api.RestoreLine{Final: true, Error: err.Error()}
			}
			return api.RestoreLine{Final: true, AsNew: res}
		case req.Volume != "":
			return d.holding(ctx, svc, "a volume restore is rolling "+req.Volume, func() api.RestoreLine {
				rec, err := d.rs.r.RestoreVolume(ctx, svc, restoreVolume(svc, req.Volume), t, progress)
				return recordLine(rec, err)
			})
		default:
			return d.holding(ctx, svc, "a restore is rolling its volumes", func() api.RestoreLine {
				rec, err := d.rs.r.Restore(ctx, svc, t, progress)
				return recordLine(rec, err)
			})
		}
	})
}

// holding runs fn with the service's markers held: a marker taken while
// its volumes roll would record a half-restored point.
// Retention folds skip the service meanwhile: a fold could let go of the
// point being restored to.
func (d *Daemon) holding(ctx context.Context, service, why string, fn func() api.RestoreLine) api.RestoreLine {
	done, err := d.folds.restoring(ctx, service)
	if err != nil {
		return api.RestoreLine{Final: true, Error: fmt.Sprintf("service %q: waiting for its retention fold: %v", service, err)}
	}
	defer done()
	release, err := d.prot.Hold(ctx, service, why)
	if err != nil {
		return api.RestoreLine{Final: true, Error: fmt.Sprintf("service %q: waiting for the running marker: %v", service, err)}
	}
	defer release()
	return fn()
}

func recordLine(rec *restore.Record, err error) api.RestoreLine {
	l := api.RestoreLine{Final: true, Record: rec}
	if err != nil {
		l.Error = err.Error()
	}
	return l
}

// stream runs fn on the daemon's context and writes its progress and its
// final line as newline-delimited JSON. A client that goes away stops
// getting lines; fn runs on to its end.
func (rs *restores) stream(w http.ResponseWriter, r *http.Request, fn func(ctx context.Context, progress func(restore.Progress)) api.RestoreLine) {
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, api.Error{Error: "the daemon is stopping"})
		return
	}
	rs.wg.Add(1)
	rs.mu.Unlock()
	// Headers first: from here on the client knows the restore started.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	alive := rc.Flush() == nil
	lines := make(chan api.RestoreLine, 64)
	done := make(chan api.RestoreLine, 1)
	go func() {
		defer rs.wg.Done()
		done <- fn(rs.ctx, func(p restore.Progress) {
			lines <- api.RestoreLine{Progress: &api.RestoreProgress{Step: p.Step, Object: p.Object, Done: p.Done, Outcome: p.Outcome,
				N: p.N, Total: p.Total, Bytes: p.Bytes, Elapsed: p.Elapsed}}
		})
	}()
	enc := json.NewEncoder(w)
	write := func(l api.RestoreLine) {
		if !alive {
			return
		}
		if err := enc.Encode(l); err != nil {
			alive = false
			return
		}
		if err := rc.Flush(); err != nil {
			alive = false
		}
	}
	for {
		select {
		case l := <-lines:
			write(l)
		case final := <-done:
			// Every progress line was queued before fn returned.
			for len(lines) > 0 {
				write(<-lines)
			}
			write(final)
			if !alive {
				rs.d.log.Info("restore client went away; the restore ran to its end", "path", r.URL.Path)
			}
			return
		}
	}
}

// restoreAsNew clones every volume of service at t as VOLUME+suffix and
// exposes each clone as a target of its own (IQN from the clone's name,
// the source target's initiators and CHAP), registered as an exposure: `lockstep volume unexpose IQN` removes the
// target and deletes the clone. A failure removes what was made.
func (d *Daemon) restoreAsNew(ctx context.Context, service string, t restore.Target, suffix string, progress func(restore.Progress)) (*api.AsNewResult, error) {
	begin := time.Now()
	total := 1
	progress(restore.Progress{Step: "clone", N: 1, Total: total, Elapsed: time.Since(begin)})
	an, err := d.rs.r.RestoreAsNew(ctx, service, t, suffix)
	if err != nil {
		progress(restore.Progress{Step: "clone", Done: true, Outcome: restore.Failed, N: 1, Total: total, Elapsed: time.Since(begin)})
		return nil, err
	}
	total += len(an.Volumes)
	progress(restore.Progress{Step: "clone", Done: true, Outcome: restore.OK, N: 1, Total: total, Elapsed: time.Since(begin)})
	res := &api.AsNewResult{Plan: an.Plan}
	var made []string
	fail := func(err error) (*api.AsNewResult, error) {
		uctx := context.WithoutCancel(ctx)
		for _, iqn := range made {
			if uerr := d.Unexpose(uctx, iqn, false); uerr != nil {
				d.log.Error("as-new: exposure not removed", "iqn", iqn, "err", uerr)
			}
		}
		for _, c := range an.Volumes[len(made):] {
			if derr := d.st.DeleteVolume(uctx, c.Name); derr != nil {
				d.log.Error("as-new: clone not deleted", "volume", c.Name, "err", derr)
			}
		}
		return nil, err
	}
	for i, c := range an.Volumes {
		n := 2 + i
		progress(restore.Progress{Step: "expose", Object: c.Name, N: n, Total: total, Elapsed: time.Since(begin)})
		v, err := d.st.Volume(c.Name)
		if err != nil {
			return fail(fmt.Errorf("as-new: %w", err))
		}
		iqn := DefaultIQN(c.Name)
		e := &exposure{Exposure: api.Exposure{IQN: iqn, Portal: d.Portal(), Volume: c.Source, At: an.Plan.TargetTime, Writable: true, Clone: c.Name}}
		if an.Plan.Marker != nil {
			e.Marker = an.Plan.Marker.ID
		}
		if err := d.srv.AddTarget(d.exposureTarget(e, v)); err != nil {
			return fail(fmt.Errorf("as-new: volume %q target %s: %w", c.Name, iqn, err))
		}
		d.mu.Lock()
		d.exposed[iqn] = e
		d.mu.Unlock()
		d.saveExposures()
		made = append(made, iqn)
		progress(restore.Progress{Step: "expose", Object: c.Name, Done: true, Outcome: restore.OK, N: n, Total: total, Elapsed: time.Since(begin)})
		res.Volumes = append(res.Volumes, api.AsNewVolume{Source: c.Source, Name: c.Name, IQN: iqn, LUN: 0, Portal: d.Portal()})
		d.log.Info("restored as new volume", "service", service, "source", c.Source, "volume", c.Name, "iqn", iqn, "at", an.Plan.TargetTime)
	}
	return res, nil
}
