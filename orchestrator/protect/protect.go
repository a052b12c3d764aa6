// Package protect is the daemon's entry point to the orchestrator core: it
// ties the catalog, the marker protocol, the scheduler and the RPO evaluator
// to one engine store, and answers the questions the API and the CLI ask
// (status, services, markers, events, alerts, metrics). The daemon creates
// one Protector, calls Start, Apply and Run, and serves the rest.
//
// The API of this file is stable: the daemon and the HTTP API code against
// it.
package protect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/marker"
	"github.com/lockstep-io/lockstep/orchestrator/rpo"
	"github.com/lockstep-io/lockstep/orchestrator/schedule"
	"github.com/lockstep-io/lockstep/policies/model"
)

// Errors callers may test for.
var (
	ErrNoService  = errors.New("protect: no such service")
	ErrNoPolicy   = errors.New("protect: no policy applied")
	ErrNotStarted = errors.New("protect: Start has not been called")
)

// Config configures a Protector. Store, Catalog and Plugins are required.
type Config struct {
	Store   *store.Store
	Catalog catalog.Catalog
	Plugins marker.Plugins
	Clock   clock.Clock  // clock.Real{} when nil
	Logger  *slog.Logger // discard when nil

	// Webhook, when set, receives every RPO alert as a JSON POST.
	Webhook string
	// Notifier replaces Webhook (tests, other channels).
	Notifier rpo.Notifier
	// OnMarker, when set, is called after every marker run (any class,
	// also failed ones with an empty ID): a hook for Prometheus
	// histograms. It must not block.
	OnMarker func(m catalog.Marker, err error)
	// OnRPO, when set, is called after every RPO evaluation of a service.
	OnRPO func(s rpo.State)

	// Interval is how often Run wakes to check schedules and RPO (real
	// time; default 1 s). Decisions use Clock.
	Interval time.Duration
	// HeartbeatEvery is how often Run records that the daemon is alive
	// (default 10 s). A gap of more than three beats found at Start is a
	// downtime: an RPO breach that overlaps it has cause daemon_down.
	HeartbeatEvery time.Duration
	// PrepareTimeout and ThawTimeout bound each Prepare and Thaw call
	// (marker defaults when zero).
	PrepareTimeout, ThawTimeout time.Duration
}

// Protector runs protection for every service of the applied policy. All
// methods are safe for concurrent use.
type Protector struct {
	cfg    Config
	clk    clock.Clock
	log    *slog.Logger
	cat    catalog.Catalog
	runner *marker.Runner
	sched  *schedule.Scheduler
	eval   *rpo.Evaluator

	mu       sync.Mutex
	started  time.Time
	policy   *model.Policy
	applied  catalog.AppliedPolicy
	services map[string]*model.Service
	locks    map[string]chan struct{} // one marker at a time per service
	holds    map[string]string        // services whose markers are held, and why
	running  map[string]time.Time     // service -> start of the running marker
	stats    map[string]*serviceStats
	lastBeat time.Time

	wg sync.WaitGroup // scheduled marker runs
}

type serviceStats struct {
	counts       map[string]int64 // by class; "failed" for fence failures
	durationSum  time.Duration
	windowSum    time.Duration
	last         *catalog.Marker
	lastDuration time.Duration
	lastWindow   time.Duration
	missed       int64
}

// New returns a Protector. Call Start before anything else.
func New(cfg Config) (*Protector, error) {
	if cfg.Store == nil || cfg.Catalog == nil || cfg.Plugins == nil {
		return nil, errors.New("protect: Store, Catalog and Plugins are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = 10 * time.Second
	}
	notifier := cfg.Notifier
	if notifier == nil && cfg.Webhook != "" {
		notifier = &rpo.Webhook{URL: cfg.Webhook}
	}
	p := &Protector{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, cat: cfg.Catalog,
		sched:    schedule.New(),
		services: map[string]*model.Service{}, locks: map[string]chan struct{}{}, holds: map[string]string{},
		running: map[string]time.Time{}, stats: map[string]*serviceStats{}}
	p.runner = &marker.Runner{Fence: cfg.Store, Catalog: cfg.Catalog, Plugins: cfg.Plugins, Clock: cfg.Clock,
		Logger: cfg.Logger, PrepareTimeout: cfg.PrepareTimeout, ThawTimeout: cfg.ThawTimeout}
	var metrics rpo.Metrics
	if cfg.OnRPO != nil {
		metrics = rpoHook(cfg.OnRPO)
	}
	p.eval = &rpo.Evaluator{Catalog: cfg.Catalog, Clock: cfg.Clock, Notifier: notifier, Metrics: metrics, Logger: cfg.Logger}
	return p, nil
}

type rpoHook func(rpo.State)

func (h rpoHook) ObserveRPO(s rpo.State) { h(s) }

// Start records the daemon's start, turns a heartbeat gap into a downtime
// and reconciles the catalog with the journal's markers. Call it once,
// before Apply and Run. It does not reload a policy: the catalog keeps
// applied policies redacted (no secrets), so the daemon applies its policy
// (from its files) after Start.
func (p *Protector) Start(ctx context.Context) (catalog.ReconcileReport, error) {
	now := p.clk.Now()
	last, err := p.cat.LastHeartbeat(ctx)
	if err != nil {
		return catalog.ReconcileReport{}, fmt.Errorf("protect: start: %w", err)
	}
	if !last.IsZero() && now.Sub(last) > 3*p.cfg.HeartbeatEvery {
		d := catalog.Downtime{Start: last, End: now}
		if err := p.cat.AddDowntime(ctx, d); err != nil {
			return catalog.ReconcileReport{}, fmt.Errorf("protect: start: %w", err)
		}
		p.event(ctx, catalog.Event{Type: catalog.EventDaemonDown, Severity: catalog.Warning,
			Message: fmt.Sprintf("the daemon was down from %s to %s (%s)", last.Format(time.RFC3339), now.Format(time.RFC3339), now.Sub(last).Round(time.Second))})
	}
	if err := p.cat.Heartbeat(ctx, now); err != nil {
		return catalog.ReconcileReport{}, fmt.Errorf("protect: start: %w", err)
	}
	p.event(ctx, catalog.Event{Type: catalog.EventDaemonStart, Severity: catalog.Info, Message: "daemon started"})
	rep, err := catalog.Reconcile(ctx, p.cat, p.cfg.Store.Markers(""), now)
	if err != nil {
		return rep, fmt.Errorf("protect: start: %w", err)
	}
	p.mu.Lock()
	p.started, p.lastBeat = now, now
	p.mu.Unlock()
	return rep, nil
}

// Apply makes pol the protected policy: it is recorded in the catalog (a new
// version unless identical to the current one), its services are scheduled
// and evaluated. Every volume of every service must exist in the store (the
// daemon creates them first). On error nothing changed.
func (p *Protector) Apply(ctx context.Context, pol *model.Policy) (catalog.AppliedPolicy, error) {
	p.mu.Lock()
	started := !p.started.IsZero()
	p.mu.Unlock()
	if !started {
		return catalog.AppliedPolicy{}, ErrNotStarted
	}
	var vols []catalog.Volume
	for _, svc := range pol.Services {
		if _, err := schedule.Parse(svc.Consistency); err != nil {
			return catalog.AppliedPolicy{}, fmt.Errorf("protect: service %q: %w", svc.Name, err)
		}
		for _, v := range svc.Volumes {
			if _, err := p.cfg.Store.Volume(v.Name); err != nil {
				return catalog.AppliedPolicy{}, fmt.Errorf("protect: service %q: %w", svc.Name, err)
			}
			vols = append(vols, catalog.Volume{Service: svc.Name, Name: v.Name, Size: v.Size, BlockSize: v.BlockSize})
		}
	}
	body, err := json.Marshal(pol)
	if err != nil {
		return catalog.AppliedPolicy{}, fmt.Errorf("protect: policy: %w", err)
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	cur, err := p.cat.Policy(ctx)
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return catalog.AppliedPolicy{}, fmt.Errorf("protect: %w", err)
	}
	ap := cur
	if err != nil || cur.Hash != hash {
		ap, err = p.cat.PutPolicy(ctx, catalog.AppliedPolicy{Hash: hash, Time: p.clk.Now(), Body: body}, vols)
		if err != nil {
			return catalog.AppliedPolicy{}, fmt.Errorf("protect: %w", err)
		}
		p.event(ctx, catalog.Event{Type: catalog.EventPolicyApplied, Severity: catalog.Info,
			Message: fmt.Sprintf("policy version %d applied (%d services)", ap.Version, len(pol.Services))})
	}
	if err := p.install(ctx, pol, ap); err != nil {
		return ap, fmt.Errorf("protect: %w", err)
	}
	return ap, nil
}

// install makes pol the in-memory policy.
func (p *Protector) install(ctx context.Context, pol *model.Policy, ap catalog.AppliedPolicy) error {
	firstSeen, err := p.firstSeen(ctx)
	if err != nil {
		return err
	}
	now := p.clk.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.services {
		if pol.Service(name) == nil {
			p.sched.Remove(name)
			p.eval.Forget(name)
		}
	}
	old := p.services
	p.services = map[string]*model.Service{}
	for _, svc := range pol.Services {
		sched, err := schedule.Parse(svc.Consistency)
		if err != nil {
			return fmt.Errorf("service %q: %w", svc.Name, err)
		}
		// Activations since the last marker count as missed only at the
		// first install after a start (the daemon was down); a re-apply
		// of a running service starts its new schedule from now.
		var lastRun time.Time
		if _, running := old[svc.Name]; !running {
			if ms, err := p.cat.Markers(ctx, catalog.MarkerFilter{Service: svc.Name, Limit: 1}); err == nil && len(ms) > 0 {
				lastRun = ms[0].Time
			}
		}
		p.sched.Set(svc.Name, sched, now, lastRun)
		since := now
		if t, ok := firstSeen[svc.Name]; ok {
			since = t
		}
		p.eval.Protect(svc.Name, since)
		p.services[svc.Name] = svc
		if p.locks[svc.Name] == nil {
			p.locks[svc.Name] = make(chan struct{}, 1)
		}
	}
	p.policy, p.applied = pol, ap
	return nil
}

// firstSeen returns, per service, the time of the first applied policy that
// held it: the start of its protection for the RPO.
func (p *Protector) firstSeen(ctx context.Context) (map[string]time.Time, error) {
	all, err := p.cat.Policies(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for _, ap := range all {
		var body struct {
			Services []struct {
				Name string `json:"name"`
			} `json:"services"`
		}
		if json.Unmarshal(ap.Body, &body) != nil {
			continue
		}
		for _, s := range body.Services {
			if _, ok := out[s.Name]; !ok {
				out[s.Name] = ap.Time
			}
		}
	}
	return out, nil
}

// Run checks schedules, runs due markers, evaluates RPO and beats the
// heartbeat until ctx is done; then it waits for running markers (they
// always thaw) and returns nil.
func (p *Protector) Run(ctx context.Context) error {
	p.mu.Lock()
	started := !p.started.IsZero()
	p.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.Tick(ctx)
		select {
		case <-ctx.Done():
			p.Wait()
			return nil
		case <-t.C:
		}
	}
}

// Tick does one round of Run at the clock's now: records missed
// activations, starts due markers in the background, evaluates every
// service's RPO, and beats the heartbeat when due. Tests call it with a fake
// clock; Wait waits for the markers it started.
func (p *Protector) Tick(ctx context.Context) {
	now := p.clk.Now()
	due, missed := p.sched.Tick(now)
	for _, m := range missed {
		p.missed(ctx, m)
	}
	for _, a := range due {
		p.mu.Lock()
		svc := p.services[a.Service]
		p.mu.Unlock()
		if svc == nil {
			p.sched.Done(a.Service)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.sched.Done(a.Service)
			if !p.tryLock(a.Service) {
				reason := schedule.ReasonBusy
				if p.heldFor(a.Service) != "" {
					reason = schedule.ReasonHeld
				}
				p.missed(ctx, schedule.Miss{Service: a.Service, At: a.At, Reason: reason, Count: 1})
				return
			}
			defer p.unlock(a.Service)
			p.run(ctx, svc, catalog.TriggerSchedule)
		}()
	}
	p.mu.Lock()
	svcs := p.serviceList()
	beat := now.Sub(p.lastBeat) >= p.cfg.HeartbeatEvery
	if beat {
		p.lastBeat = now
	}
	p.mu.Unlock()
	if err := p.eval.Evaluate(ctx, svcs); err != nil && ctx.Err() == nil {
		p.log.Error("protect: rpo evaluation", "err", err)
	}
	if beat {
		if err := p.cat.Heartbeat(ctx, now); err != nil && ctx.Err() == nil {
			p.log.Error("protect: heartbeat", "err", err)
		}
	}
}

// Wait waits for the scheduled markers that Tick started.
func (p *Protector) Wait() { p.wg.Wait() }

func (p *Protector) missed(ctx context.Context, m schedule.Miss) {
	p.mu.Lock()
	st := p.stat(m.Service)
	st.missed += int64(m.Count)
	p.mu.Unlock()
	why := "the daemon was not running"
	switch m.Reason {
	case schedule.ReasonBusy:
		why = "the previous marker was still running"
	case schedule.ReasonHeld:
		why = "markers were held: " + p.heldFor(m.Service)
	}
	data, _ := json.Marshal(m)
	p.event(ctx, catalog.Event{Type: catalog.EventMissedSchedule, Severity: catalog.Warning, Service: m.Service, Data: data,
		Message: fmt.Sprintf("%d scheduled marker(s) of service %q from %s did not run on time: %s", m.Count, m.Service, m.At.Format(time.RFC3339), why)})
}

func (p *Protector) serviceList() []*model.Service {
	out := make([]*model.Service, 0, len(p.services))
	for _, s := range p.services {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (p *Protector) stat(service string) *serviceStats {
	st := p.stats[service]
	if st == nil {
		st = &serviceStats{counts: map[string]int64{}}
		p.stats[service] = st
	}
	return st
}

func (p *Protector) tryLock(service string) bool {
	p.mu.Lock()
	l := p.locks[service]
	p.mu.Unlock()
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

func (p *Protector) lock(ctx context.Context, service string) error {
	p.mu.Lock()
	l := p.locks[service]
	p.mu.Unlock()
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("protect: service %q: waiting for the running marker: %w", service, ctx.Err())
	}
}

func (p *Protector) unlock(service string) {
	p.mu.Lock()
	l := p.locks[service]
	p.mu.Unlock()
	<-l
}

func (p *Protector) run(ctx context.Context, svc *model.Service, trigger string) (catalog.Marker, error) {
	p.mu.Lock()
	p.running[svc.Name] = p.clk.Now()
	p.mu.Unlock()
	m, err := p.runner.Run(ctx, svc, trigger)
	p.mu.Lock()
	delete(p.running, svc.Name)
	st := p.stat(svc.Name)
	switch {
	case m.ID == "":
		st.counts["failed"]++
	default:
		st.counts[m.Class]++
		st.durationSum += m.Duration
		st.windowSum += m.FreezeWindow()
		st.lastDuration, st.lastWindow = m.Duration, m.FreezeWindow()
		c := m
		st.last = &c
	}
	p.mu.Unlock()
	if p.cfg.OnMarker != nil {
		p.cfg.OnMarker(m, err)
	}
	if err != nil {
		p.log.Warn("protect: marker", "service", svc.Name, "trigger", trigger, "err", err)
	}
	return m, err
}

// Mark takes a marker of service now (`lockstep mark`), waiting for a
// running one to finish first. A skipped marker returns the skipped record
// and an error wrapping marker.ErrSkipped; a crash-consistent one returns
// no error (its Class and Reason say why).
func (p *Protector) Mark(ctx context.Context, service string) (catalog.Marker, error) {
	p.mu.Lock()
	svc := p.services[service]
	p.mu.Unlock()
	if svc == nil {
		return catalog.Marker{}, fmt.Errorf("%w: %q", ErrNoService, service)
	}
	if why := p.heldFor(service); why != "" {
		return catalog.Marker{}, fmt.Errorf("%w: service %q: %s", ErrHeld, service, why)
	}
	if err := p.lock(ctx, service); err != nil {
		return catalog.Marker{}, err
	}
	defer p.unlock(service)
	return p.run(ctx, svc, catalog.TriggerManual)
}

// ErrHeld is returned by Mark while a service's markers are held.
var ErrHeld = errors.New("protect: markers are held")

// Hold stops markers of service until release is called: a restore rolls
// its volumes, and a marker in the middle would record a half-restored
// point. It waits for a marker under way to end. Scheduled markers that
// fall due meanwhile are recorded as missed with why; Mark returns ErrHeld.
func (p *Protector) Hold(ctx context.Context, service, why string) (release func(), err error) {
	p.mu.Lock()
	known := p.locks[service] != nil
	p.mu.Unlock()
	if !known {
		return func() {}, nil
	}
	if err := p.lock(ctx, service); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.holds[service] = why
	p.mu.Unlock()
	return sync.OnceFunc(func() {
		p.mu.Lock()
		delete(p.holds, service)
		p.mu.Unlock()
		p.unlock(service)
	}), nil
}

func (p *Protector) heldFor(service string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holds[service]
}

// AppStatus is one app of a service.
type AppStatus struct {
	Name      string   `json:"name"`
	Plugin    string   `json:"plugin"`
	Host      string   `json:"host,omitempty"`
	DependsOn []string `json:"depends_on,omitempty"`
}

// ServiceStatus is what `lockstep services` and `status` show per service.
type ServiceStatus struct {
	Name     string      `json:"name"`
	Volumes  []string    `json:"volumes"`
	Apps     []AppStatus `json:"apps"`
	Schedule string      `json:"schedule"` // cron expression or "every 5m"
	Next     time.Time   `json:"next,omitzero"`
	// Running is the start of the marker running now, zero when none.
	Running    time.Time       `json:"running,omitzero"`
	LastMarker *catalog.Marker `json:"last_marker,omitempty"` // newest of any class
	LastApp    *catalog.Marker `json:"last_app,omitempty"`    // newest app-consistent
	RPO        rpo.State       `json:"rpo"`
}

// Status is what `lockstep status` shows.
type Status struct {
	Now           time.Time       `json:"now"`
	Started       time.Time       `json:"started"`
	PolicyVersion int             `json:"policy_version"`
	PolicyHash    string          `json:"policy_hash,omitempty"`
	PolicyTime    time.Time       `json:"policy_time,omitzero"`
	Services      []ServiceStatus `json:"services"`
	OpenAlerts    []catalog.Alert `json:"open_alerts"`
}

// Services returns the status of every service, by name.
func (p *Protector) Services(ctx context.Context) ([]ServiceStatus, error) {
	p.mu.Lock()
	svcs := p.serviceList()
	running := make(map[string]time.Time, len(p.running))
	for k, v := range p.running {
		running[k] = v
	}
	p.mu.Unlock()
	out := make([]ServiceStatus, 0, len(svcs))
	for _, svc := range svcs {
		s := ServiceStatus{Name: svc.Name, Schedule: svc.Consistency.Schedule, Next: p.sched.Next(svc.Name), Running: running[svc.Name]}
		if svc.Consistency.Every > 0 {
			s.Schedule = "every " + model.FormatDuration(svc.Consistency.Every)
		}
		for _, v := range svc.Volumes {
			s.Volumes = append(s.Volumes, v.Name)
		}
		for _, a := range svc.Apps {
			s.Apps = append(s.Apps, AppStatus{Name: a.Name, Plugin: a.Plugin, Host: a.Host(), DependsOn: a.DependsOn})
		}
		if m, err := p.cat.Markers(ctx, catalog.MarkerFilter{Service: svc.Name, Limit: 1}); err != nil {
			return nil, fmt.Errorf("protect: service %q: %w", svc.Name, err)
		} else if len(m) == 1 {
			s.LastMarker = &m[0]
		}
		if m, err := p.cat.LatestMarker(ctx, svc.Name, catalog.ClassApp); err == nil {
			s.LastApp = &m
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return nil, fmt.Errorf("protect: service %q: %w", svc.Name, err)
		}
		if st, ok := p.eval.State(svc.Name); ok {
			s.RPO = st
		} else {
			s.RPO = rpo.State{Service: svc.Name, Target: svc.RPO.Journal}
		}
		out = append(out, s)
	}
	return out, nil
}

// Status returns the daemon's status.
func (p *Protector) Status(ctx context.Context) (Status, error) {
	svcs, err := p.Services(ctx)
	if err != nil {
		return Status{}, err
	}
	alerts, err := p.cat.Alerts(ctx, catalog.AlertFilter{OpenOnly: true})
	if err != nil {
		return Status{}, fmt.Errorf("protect: %w", err)
	}
	if alerts == nil {
		alerts = []catalog.Alert{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return Status{Now: p.clk.Now(), Started: p.started, PolicyVersion: p.applied.Version, PolicyHash: p.applied.Hash,
		PolicyTime: p.applied.Time, Services: svcs, OpenAlerts: alerts}, nil
}

// Service returns the applied model of service.
func (p *Protector) Service(name string) (*model.Service, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	svc := p.services[name]
	if svc == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoService, name)
	}
	return svc, nil
}

// Policy returns the applied policy and its catalog record, or ErrNoPolicy.
func (p *Protector) Policy() (*model.Policy, catalog.AppliedPolicy, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.policy == nil {
		return nil, catalog.AppliedPolicy{}, ErrNoPolicy
	}
	return p.policy, p.applied, nil
}

// Markers lists the markers of service (all when empty) at or after since,
// oldest first, skipped attempts and expired markers included.
func (p *Protector) Markers(ctx context.Context, service string, since time.Time) ([]catalog.Marker, error) {
	if service != "" {
		if _, err := p.Service(service); err != nil {
			if ms, cerr := p.cat.Markers(ctx, catalog.MarkerFilter{Service: service, Limit: 1}); cerr != nil || len(ms) == 0 {
				return nil, err
			}
		}
	}
	ms, err := p.cat.Markers(ctx, catalog.MarkerFilter{Service: service, Since: since})
	if err != nil {
		return nil, fmt.Errorf("protect: %w", err)
	}
	return ms, nil
}

// Marker returns one marker by id (catalog.ErrNotFound when unknown).
func (p *Protector) Marker(ctx context.Context, id string) (catalog.Marker, error) {
	return p.cat.Marker(ctx, id)
}

// Events lists events, oldest first.
func (p *Protector) Events(ctx context.Context, f catalog.EventFilter) ([]catalog.Event, error) {
	return p.cat.Events(ctx, f)
}

// Alerts lists RPO alerts, oldest first.
func (p *Protector) Alerts(ctx context.Context, f catalog.AlertFilter) ([]catalog.Alert, error) {
	return p.cat.Alerts(ctx, f)
}

// ServiceMetrics are one service's numbers for /metrics.
type ServiceMetrics struct {
	Service   string        `json:"service"`
	RPOAge    time.Duration `json:"rpo_age"`
	RPOTarget time.Duration `json:"rpo_target"`
	Breached  bool          `json:"breached"`
	// Markers counts marker runs by class: app, crash, skipped, and
	// failed (the fence failed, no point).
	Markers map[string]int64 `json:"markers"`
	Missed  int64            `json:"missed"` // missed scheduled activations
	// Sums over every recorded marker, for Prometheus summaries.
	DurationSum     time.Duration `json:"duration_sum"`
	FreezeWindowSum time.Duration `json:"freeze_window_sum"`
	LastDuration    time.Duration `json:"last_duration"`
	LastFreeze      time.Duration `json:"last_freeze_window"`
	LastMarker      time.Time     `json:"last_marker,omitzero"`
}

// Metrics is a snapshot of every service's numbers.
type Metrics struct {
	Services []ServiceMetrics `json:"services"`
}

// Metrics returns a snapshot. Counters count since this process started.
func (p *Protector) Metrics() Metrics {
	p.mu.Lock()
	svcs := p.serviceList()
	var out Metrics
	for _, svc := range svcs {
		st := p.stat(svc.Name)
		sm := ServiceMetrics{Service: svc.Name, RPOTarget: svc.RPO.Journal, Markers: map[string]int64{},
			Missed: st.missed, DurationSum: st.durationSum, FreezeWindowSum: st.windowSum,
			LastDuration: st.lastDuration, LastFreeze: st.lastWindow}
		for k, v := range st.counts {
			sm.Markers[k] = v
		}
		if st.last != nil {
			sm.LastMarker = st.last.Time
		}
		out.Services = append(out.Services, sm)
	}
	p.mu.Unlock()
	for i := range out.Services {
		if s, ok := p.eval.State(out.Services[i].Service); ok {
			out.Services[i].RPOAge, out.Services[i].Breached = s.Age, s.Breached
		}
	}
	return out
}

func (p *Protector) event(ctx context.Context, e catalog.Event) {
	if e.Time.IsZero() {
		e.Time = p.clk.Now()
	}
	if _, err := p.cat.AddEvent(context.WithoutCancel(ctx), e); err != nil {
		p.log.Error("protect: event not recorded", "type", e.Type, "err", err)
	}
}
