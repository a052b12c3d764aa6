package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/retention"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
	"github.com/lockstep-io/lockstep/policies/model"
)

// DefaultFoldInterval is how often retention folds run unless configured.
const DefaultFoldInterval = 10 * time.Minute

// EventRetentionFold is the catalog event of a fold that changed something
// (segments removed, markers expired), failed, or was skipped.
const EventRetentionFold = "retention_fold"

const (
	// undoGrace is how long past its service's journal window the undo
	// point of the last in-place restore stays readable.
	undoGrace = 7 * 24 * time.Hour
	// unprotectedWindow is the journal window of volumes no service names
	// (not clones): the policy's default retention.journal.
	unprotectedWindow = 72 * time.Hour
)

// folds serializes retention folds and keeps them off services being
// restored: a fold could let go of the point a restore rolls to.
type folds struct {
	run sync.Mutex // one fold at a time

	mu       sync.Mutex
	restores map[string]int           // service -> restores holding it
	folding  map[string]chan struct{} // service -> closed when its fold ends
	lastSkip map[string]string        // service -> reason of the last skip recorded
	stats    map[string]*foldStats    // service ("" for the volumes of none)
	// serving is Serve's context: API folds run on it, not on their
	// request's, so a client going away does not stop one half-way.
	serving context.Context
}

type foldStats struct {
	ok, skipped, failed uint64
	bytes               int64
	last                time.Time
}

func newFolds() *folds {
	return &folds{restores: map[string]int{}, folding: map[string]chan struct{}{}, lastSkip: map[string]string{}, stats: map[string]*foldStats{}}
}

// restoring marks service as being restored until done is called; it waits
// for a fold of service under way.
func (f *folds) restoring(ctx context.Context, service string) (done func(), err error) {
	f.mu.Lock()
	for f.folding[service] != nil {
		ch := f.folding[service]
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		f.mu.Lock()
	}
	f.restores[service]++
	f.mu.Unlock()
	return sync.OnceFunc(func() {
		f.mu.Lock()
		if f.restores[service]--; f.restores[service] <= 0 {
			delete(f.restores, service)
		}
		f.mu.Unlock()
	}), nil
}

// begin claims service for a fold; false while a restore holds it.
func (f *folds) begin(service string) (end func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.restores[service] > 0 {
		return nil, false
	}
	ch := make(chan struct{})
	f.folding[service] = ch
	return func() {
		f.mu.Lock()
		delete(f.folding, service)
		f.mu.Unlock()
		close(ch)
	}, true
}

func (f *folds) stat(service string) *foldStats {
	st := f.stats[service]
	if st == nil {
		st = &foldStats{}
		f.stats[service] = st
	}
	return st
}

// foldLoop folds every FoldInterval until ctx ends. Time for the folds'
// decisions comes from the daemon's clock; the interval is real time.
func (d *Daemon) foldLoop(ctx context.Context) error {
	d.folds.mu.Lock()
	d.folds.serving = ctx
	d.folds.mu.Unlock()
	every := d.cfg.FoldInterval
	if every < 0 {
		d.log.Warn("retention folds are disabled (--fold-interval 0): the journal grows without bound; run `lockstep fold` to fold by hand")
		<-ctx.Done()
		return nil
	}
	d.log.Info("retention folds scheduled", "every", every)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := d.Fold(ctx, ""); err != nil && ctx.Err() == nil {
				d.log.Error("retention fold", "err", err)
			}
		}
	}
}

// Fold runs one retention fold now: of service, or of every service of the
// applied policy and then of the volumes of none when service is empty.
// Each service's volumes are folded by its retention; the markers its keep
// rules select, the views and clones alive, and the undo point of its last
// restore stay readable. A service being restored, or with an unfinished
// restore, is skipped. Afterwards the catalog's markers whose journal
// record went are set to expired. Folds never run concurrently.
func (d *Daemon) Fold(ctx context.Context, service string) (api.FoldResult, error) {
	d.folds.run.Lock()
	defer d.folds.run.Unlock()
	now := d.clk.Now()
	res := api.FoldResult{Time: now.UTC(), Services: []api.ServiceFold{}}
	d.mu.Lock()
	var all []*model.Service
	if d.applied != nil && d.applied.pol != nil {
		all = append(all, d.applied.pol.Services...)
	}
	d.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	managed := map[string]bool{}
	var svcs []*model.Service
	for _, s := range all {
		for _, v := range s.Volumes {
			managed[VolumeName(s.Name, v.Name)] = true
		}
		if service == "" || s.Name == service {
			svcs = append(svcs, s)
		}
	}
	if service != "" && len(svcs) == 0 {
		return res, fmt.Errorf("fold: no service %q in the applied policy (see `lockstep services`): %w", service, errNotFound)
	}
	for _, s := range svcs {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		res.Services = append(res.Services, d.foldService(ctx, s, now))
	}
	if service == "" {
		res.Unprotected = d.foldUnprotected(ctx, now, managed)
	}

	expired, err := d.prot.ExpireMarkers(context.WithoutCancel(ctx))
	if err != nil {
		d.log.Error("retention fold: catalog markers not expired", "err", err)
		d.recordEvent(catalog.Event{Type: catalog.EventError, Severity: catalog.Error,
			Message: fmt.Sprintf("retention fold: the catalog could not be brought in line with the journal: %v", err)})
	}
	for _, m := range expired {
		for i := range res.Services {
			if res.Services[i].Service == m.Service {
				res.Services[i].MarkersExpired = append(res.Services[i].MarkersExpired, m.ID)
			}
		}
	}
	for i := range res.Services {
		d.foldDone(&res.Services[i], res.Services[i].Service)
	}
	if res.Unprotected != nil {
		d.foldDone(res.Unprotected, "")
	}
	for _, sf := range append(res.Services, ptrs(res.Unprotected)...) {
		res.SegmentsRemoved += sf.SegmentsRemoved
		res.BytesFreed += sf.BytesFreed
	}
	res.JournalBytes = d.journalStatus().Bytes
	return res, nil
}

func ptrs(sf *api.ServiceFold) []api.ServiceFold {
	if sf == nil {
		return nil
	}
	return []api.ServiceFold{*sf}
}

// foldService folds one service's volumes.
func (d *Daemon) foldService(ctx context.Context, s *model.Service, now time.Time) api.ServiceFold {
	sf := api.ServiceFold{Service: s.Name, Volumes: []string{}, Kept: []string{}, MarkersExpired: []string{}}
	for _, v := range s.Volumes {
		sf.Volumes = append(sf.Volumes, VolumeName(s.Name, v.Name))
	}
	pol := retentionPolicy(s.Retention)
	if pol.Window <= 0 {
		sf.Skipped = "the service keeps no journal window (retention.journal)"
		return sf
	}
	end, ok := d.folds.begin(s.Name)
	if !ok {
		sf.Skipped = "a restore of the service is running"
		return sf
	}
	defer end()
	var recs []*restore.Record
	if d.rs != nil {
		var err error
		if recs, err = d.rs.r.Records(s.Name); err != nil {
			sf.Error = fmt.Sprintf("restore records: %v", err)
			return sf
		}
	}
	undo, undoVols, why := restoreKeep(recs)
	if why != "" {
		sf.Skipped = why
		return sf
	}
	if undo != 0 && now.Sub(time.Unix(0, undo)) > pol.Window+undoGrace {
		undo = 0 // too old: undoing it is no longer offered
	}

	begin := time.Now()
	var pts []retention.Point
	for _, m := range d.st.Markers(s.Name) {
		pts = append(pts, retention.Point{ID: m.ID, TS: m.TS, App: m.Class == store.ClassApp})
	}
	dec := retention.Decide(now, pol, pts)
	keep := make([]int64, 0, len(dec.Keep)+1)
	for _, k := range dec.Keep {
		keep = append(keep, k.TS)
		sf.Kept = append(sf.Kept, k.ID)
	}
	plans := map[string]store.FoldPlan{}
	for _, v := range sf.Volumes {
		p := store.FoldPlan{Through: dec.Through, Keep: keep}
		if undo != 0 && contains(undoVols, v) && undo <= dec.Through {
			p.Keep = append(append([]int64(nil), keep...), undo)
			sf.UndoPoint = time.Unix(0, undo).UTC()
		}
		plans[v] = p
	}
	rep, err := d.st.Fold(ctx, plans)
	sf.Duration = time.Since(begin)
	d.report(&sf, rep, err, dec.Through)
	return sf
}

// restoreKeep reads a service's restore records (oldest first): why, when a
// restore is unfinished (it must be resumed or undone before history may go);
// otherwise the undo point of the last restore that can still be undone,
// and its volumes.
func restoreKeep(recs []*restore.Record) (undo int64, vols []string, why string) {
	for _, rec := range recs {
		if !rec.Finished() && rec.UndoneBy == "" {
			return 0, nil, fmt.Sprintf("restore %s is unfinished (%s): resume it with `lockstep restore --resume %s` or undo it with `lockstep restore %s --undo`",
				rec.ID, rec.State, rec.ID, rec.Service)
		}
	}
	for i := len(recs) - 1; i >= 0; i-- {
		rec := recs[i]
		if rec.Kind == restore.KindUndo {
			continue
		}
		if rec.UndoneBy == "" && rec.State != restore.StateUndone && rec.UndoPoint != 0 {
			return rec.UndoPoint, rec.Volumes, ""
		}
		break
	}
	return 0, nil, ""
}

// foldUnprotected folds the volumes of no service: clones through now
// (their own history is not protected: they must not pin the journal), any
// other volume by the default window, keeping the markers that cover it.
func (d *Daemon) foldUnprotected(ctx context.Context, now time.Time, managed map[string]bool) *api.ServiceFold {
	sf := &api.ServiceFold{Volumes: []string{}, Kept: []string{}, MarkersExpired: []string{}}
	through := now.Add(-unprotectedWindow).UnixNano()
	markers := d.st.Markers("")
	plans := map[string]store.FoldPlan{}
	for _, vi := range d.st.Volumes() {
		if managed[vi.Name] {
			continue
		}
		sf.Volumes = append(sf.Volumes, vi.Name)
		if vi.Parent != "" {
			plans[vi.Name] = store.FoldPlan{Through: now.UnixNano()}
			continue
		}
		p := store.FoldPlan{Through: through}
		for _, m := range markers {
			if m.TS <= through && contains(m.Volumes, vi.Name) {
				p.Keep = append(p.Keep, m.TS)
				sf.Kept = append(sf.Kept, m.ID)
			}
		}
		plans[vi.Name] = p
	}
	if len(plans) == 0 {
		return nil
	}
	begin := time.Now()
	rep, err := d.st.Fold(ctx, plans)
	if errors.Is(err, store.ErrNotFound) {
		// A clone deleted meanwhile (unexpose): fold the others.
		for n := range plans {
			if _, verr := d.st.Volume(n); verr != nil {
				delete(plans, n)
			}
		}
		rep, err = d.st.Fold(ctx, plans)
	}
	sf.Duration = time.Since(begin)
	d.report(sf, rep, err, through)
	return sf
}

// report fills sf from a store fold.
func (d *Daemon) report(sf *api.ServiceFold, rep *store.FoldReport, err error, through int64) {
	if err != nil {
		sf.Error = err.Error()
	}
	if rep == nil {
		return
	}
	sf.SegmentsRemoved, sf.BytesFreed = rep.SegmentsRemoved, rep.BytesRemoved
	// The fold stops at the newest durable write: the window starts at
	// the volumes' fold point.
	ws := int64(0)
	for _, vf := range rep.Volumes {
		if vf.Through > 0 && (ws == 0 || vf.Through < ws) {
			ws = vf.Through
		}
	}
	if ws == 0 && err == nil {
		ws = through
	}
	if ws > 0 {
		sf.WindowStart = time.Unix(0, ws).UTC()
	}
}

// foldDone logs sf, counts it and records its event when it changed
// something, failed, or was skipped for a new reason: an idle daemon does
// not fill the event log.
func (d *Daemon) foldDone(sf *api.ServiceFold, key string) {
	name := sf.Service
	if name == "" {
		name = "volumes of no service"
	} else {
		name = fmt.Sprintf("service %q", name)
	}
	f := d.folds
	f.mu.Lock()
	st := f.stat(key)
	lastSkip := f.lastSkip[key]
	f.lastSkip[key] = sf.Skipped
	switch {
	case sf.Error != "":
		st.failed++
	case sf.Skipped != "":
		st.skipped++
	default:
		st.ok++
		st.bytes += sf.BytesFreed
		st.last = d.clk.Now()
	}
	f.mu.Unlock()

	var e catalog.Event
	switch {
	case sf.Error != "":
		e = catalog.Event{Severity: catalog.Error, Message: fmt.Sprintf("retention fold of %s failed: %s", name, sf.Error)}
		d.log.Error("retention fold failed", "service", sf.Service, "err", sf.Error)
	case sf.Skipped != "":
		if sf.Skipped == lastSkip {
			d.log.Debug("retention fold skipped", "service", sf.Service, "why", sf.Skipped)
			return
		}
		e = catalog.Event{Severity: catalog.Warning, Message: fmt.Sprintf("retention fold of %s skipped: %s", name, sf.Skipped)}
		d.log.Warn("retention fold skipped", "service", sf.Service, "why", sf.Skipped)
	case sf.SegmentsRemoved > 0 || len(sf.MarkersExpired) > 0:
		e = catalog.Event{Severity: catalog.Info, Message: fmt.Sprintf("retention fold of %s: window starts %s; %d marker(s) expired, %d journal segment(s) removed, %s freed in %s",
			name, sf.WindowStart.Format(time.RFC3339), len(sf.MarkersExpired), sf.SegmentsRemoved, api.FormatBytes(sf.BytesFreed), sf.Duration.Round(time.Millisecond))}
		d.log.Info("retention fold", "service", sf.Service, "window_start", sf.WindowStart, "markers_expired", len(sf.MarkersExpired),
			"segments_removed", sf.SegmentsRemoved, "bytes_freed", sf.BytesFreed, "duration", sf.Duration)
	default:
		d.log.Debug("retention fold", "service", sf.Service, "window_start", sf.WindowStart, "duration", sf.Duration)
		return
	}
	e.Type, e.Service, e.Data = EventRetentionFold, sf.Service, mustJSON(sf)
	d.recordEvent(e)
}

// recordEvent adds e to the catalog when the orchestrator keeps events.
func (d *Daemon) recordEvent(e catalog.Event) {
	b, ok := d.prot.(restoreBackend)
	if !ok {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.clk.Now()
	}
	if _, err := b.AddEvent(context.Background(), e); err != nil {
		d.log.Error("event not recorded", "type", e.Type, "service", e.Service, "err", err)
	}
}

func (d *Daemon) foldRoutes(mux *http.ServeMux) {
	// A fold runs to its end even if the client goes away (it is
	// crash-safe, but stopping half-way wastes the work done); it stops
	// with the daemon.
	ctxOf := func(r *http.Request) context.Context {
		d.folds.mu.Lock()
		defer d.folds.mu.Unlock()
		if d.folds.serving != nil {
			return d.folds.serving
		}
		return r.Context()
	}
	mux.HandleFunc("POST /v1/fold", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Fold(ctxOf(r), "")
		reply(w, res, err)
	})
	mux.HandleFunc("POST /v1/services/{service}/fold", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Fold(ctxOf(r), r.PathValue("service"))
		reply(w, res, err)
	})
}
