package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/catalog/boltcat"
	"github.com/lockstep-io/lockstep/orchestrator/protect"
	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

// Protector is the orchestrator as the daemon uses it: package protect
// behind the daemon's volume naming, so tests can put a faulty one in its
// place. All methods are safe for concurrent use.
type Protector interface {
	// Kind names the implementation for status and logs.
	Kind() string
	// Apply makes pol the protected policy; an error changed nothing.
	Apply(ctx context.Context, pol *model.Policy) (catalog.AppliedPolicy, error)
	// Run runs schedules and RPO evaluation until ctx ends.
	Run(ctx context.Context) error
	// Mark takes one marker of service now and returns it as recorded
	// (a skipped attempt comes back with its record and an error).
	Mark(ctx context.Context, service string) (catalog.Marker, error)
	// Markers lists the markers of service at or after since, oldest
	// first.
	Markers(ctx context.Context, service string, since time.Time) ([]catalog.Marker, error)
	// Events lists events, oldest first.
	Events(ctx context.Context, f catalog.EventFilter) ([]catalog.Event, error)
	// Services reports each service of the applied policy.
	Services(ctx context.Context) ([]api.Service, error)
	// Hold stops markers of service until release is called (a restore
	// rolls its volumes); it waits for a marker under way.
	Hold(ctx context.Context, service, why string) (release func(), err error)
	// ExpireMarkers sets every restorable catalog marker whose journal
	// record is gone (a retention fold let it go) to expired, each with a
	// "marker_expired" event, and returns them. It never adds markers, so
	// it is safe while markers are being taken.
	ExpireMarkers(ctx context.Context) ([]catalog.Marker, error)
	// Metrics is a snapshot for /metrics.
	Metrics() protect.Metrics
	Close() error
}

// errNotFound marks errors about an object that does not exist (404).
var errNotFound = errors.New("not found")

// CatalogFile is the embedded catalog in the data directory.
const CatalogFile = "catalog.db"

// protector runs package protect on the daemon's store with the catalog in
// DATA/catalog.db and plugins launched by package host.
type protector struct {
	p       *protect.Protector
	st      *store.Store
	clk     clock.Clock
	cat     *boltcat.Catalog
	plugins *hostPlugins
}

func defaultProtector(ctx context.Context, d *Daemon) (Protector, error) {
	cat, err := boltcat.Open(filepath.Join(d.cfg.DataDir, CatalogFile), boltcat.Options{})
	if err != nil {
		return nil, err
	}
	hp := &hostPlugins{d: d, clients: map[string]*host.Client{}}
	p, err := protect.New(protect.Config{Store: d.st, Catalog: cat, Plugins: hp, Clock: d.clk, Logger: d.log, Webhook: d.cfg.RPOWebhook})
	if err != nil {
		cat.Close()
		return nil, err
	}
	rep, err := p.Start(ctx)
	if err != nil {
		cat.Close()
		return nil, err
	}
	if len(rep.Added)+len(rep.Expired) > 0 {
		d.log.Info("catalog reconciled with the journal", "added", len(rep.Added), "expired", len(rep.Expired))
	}
	return &protector{p: p, st: d.st, clk: d.clk, cat: cat, plugins: hp}, nil
}

func (p *protector) Kind() string { return "protect" }

func (p *protector) Apply(ctx context.Context, pol *model.Policy) (catalog.AppliedPolicy, error) {
	return p.p.Apply(ctx, storeNames(pol))
}

func (p *protector) Run(ctx context.Context) error { return p.p.Run(ctx) }

func (p *protector) Hold(ctx context.Context, service, why string) (func(), error) {
	return p.p.Hold(ctx, service, why)
}

func (p *protector) Mark(ctx context.Context, service string) (catalog.Marker, error) {
	m, err := p.p.Mark(ctx, service)
	if errors.Is(err, protect.ErrHeld) {
		err = fmt.Errorf("%w: %w", err, errRefused)
	}
	if errors.Is(err, protect.ErrNoService) {
		err = fmt.Errorf("no service %q in the applied policy (see `lockstep services`): %w", service, errNotFound)
	}
	return m, err
}

func (p *protector) Markers(ctx context.Context, service string, since time.Time) ([]catalog.Marker, error) {
	ms, err := p.p.Markers(ctx, service, since)
	if errors.Is(err, protect.ErrNoService) {
		err = fmt.Errorf("no service %q (see `lockstep services`): %w", service, errNotFound)
	}
	if ms == nil && err == nil {
		ms = []catalog.Marker{}
	}
	return ms, err
}

func (p *protector) Events(ctx context.Context, f catalog.EventFilter) ([]catalog.Event, error) {
	return p.p.Events(ctx, f)
}

func (p *protector) Services(ctx context.Context) ([]api.Service, error) {
	ss, err := p.p.Services(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Service, 0, len(ss))
	for _, s := range ss {
		as := api.Service{Name: s.Name, Volumes: s.Volumes, Apps: []api.App{}, Schedule: s.Schedule, NextRun: s.Next, Running: s.Running,
			RPOTarget: s.RPO.Target, RPOAge: s.RPO.Age, Breached: s.RPO.Breached, Alert: s.RPO.Alert}
		if as.Volumes == nil {
			as.Volumes = []string{}
		}
		for _, a := range s.Apps {
			as.Apps = append(as.Apps, api.App{Name: a.Name, Plugin: a.Plugin, Host: a.Host, DependsOn: a.DependsOn})
		}
		if s.LastMarker != nil {
			m := api.NewMarker(*s.LastMarker)
			as.LastMarker = &m
		}
		if s.LastApp != nil {
			m := api.NewMarker(*s.LastApp)
			as.LastApp = &m
		}
		out = append(out, as)
	}
	return out, nil
}

func (p *protector) Metrics() protect.Metrics { return p.p.Metrics() }

func (p *protector) ExpireMarkers(ctx context.Context) ([]catalog.Marker, error) {
	return catalog.ExpireGone(ctx, p.cat, p.st.Markers(""), p.clk.Now())
}

func (p *protector) Close() error {
	p.plugins.Close()
	return p.cat.Close()
}

// storeNames returns pol with every volume named as the store names it
// (service/volume): package protect fences and records store volumes by
// the policy's names, and volume names are only unique within a service.
func storeNames(pol *model.Policy) *model.Policy {
	out := &model.Policy{Plugins: pol.Plugins}
	for _, s := range pol.Services {
		c := *s
		c.Volumes = make([]*model.Volume, len(s.Volumes))
		for i, v := range s.Volumes {
			vc := *v
			vc.Name = VolumeName(s.Name, v.Name)
			c.Volumes[i] = &vc
		}
		c.Apps = make([]*model.App, len(s.Apps))
		for i, a := range s.Apps {
			ac := *a
			ac.Volumes = make([]string, len(a.Volumes))
			for j, v := range a.Volumes {
				ac.Volumes[j] = VolumeName(s.Name, v)
			}
			c.Apps[i] = &ac
		}
		out.Services = append(out.Services, &c)
	}
	return out
}

// hostPlugins launches the plugin of each app through package host: a
// built-in from this executable, a vendor plugin from the path and
// checksum its plugin block declares. Plugins run as child processes so
// that a daemon killed mid-freeze leaves them to thaw on their watchdog.
type hostPlugins struct {
	d       *Daemon
	mu      sync.Mutex
	clients map[string]*host.Client
}

func (h *hostPlugins) Plugin(_ context.Context, svc *model.Service, app *model.App) (sdk.Plugin, error) {
	if hn := app.Host(); hn != "" {
		return h.d.remotePlugin(svc, app) // through the host's agent (agents.go)
	}
	var decl *model.Plugin
	h.d.mu.Lock()
	if h.d.applied != nil {
		for _, p := range h.d.applied.pol.Plugins {
			if p.Name == app.Plugin {
				decl = p
			}
		}
	}
	h.d.mu.Unlock()
	key := app.Plugin
	if decl != nil && !decl.Builtin() {
		key = decl.Source + "@" + decl.SHA256
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.clients[key]; c != nil {
		return c, nil
	}
	c, err := h.launch(app.Plugin, decl)
	if err != nil {
		return nil, fmt.Errorf("plugin %q of app %q: %w", app.Plugin, app.Name, err)
	}
	h.clients[key] = c
	return c, nil
}

// launch starts a client for a plugin: a built-in from this executable; a
// vendor plugin installed in DATA/plugins (`lockstep plugin install`), whose
// manifest must agree with the block's pins; else the block's source, which
// must then be pinned by checksum since go-plugin verifies it at every launch.
func (h *hostPlugins) launch(name string, decl *model.Plugin) (*host.Client, error) {
	if decl == nil || decl.Builtin() {
		return host.Builtin(name, h.opts())
	}
	m := host.NewManager(filepath.Join(h.d.cfg.DataDir, "plugins"), h.opts())
	if man, err := m.Info(decl.Name); err == nil {
		if decl.SHA256 != "" && !strings.EqualFold(decl.SHA256, man.SHA256) {
			return nil, fmt.Errorf("installed plugin %q has sha256 %s, the policy pins %s: install the pinned build or update the pin", decl.Name, man.SHA256, decl.SHA256)
		}
		if decl.Version != "" && decl.Version != man.Version {
			return nil, fmt.Errorf("installed plugin %q is version %s, the policy pins %s", decl.Name, man.Version, decl.Version)
		}
		return m.Client(decl.Name)
	}
	if decl.SHA256 == "" {
		return nil, fmt.Errorf("plugin %q is not installed (`lockstep plugin install`) and its plugin block pins no sha256 for %s", decl.Name, decl.Source)
	}
	return host.New(host.Spec{Name: decl.Name, Path: decl.Source, SHA256: decl.SHA256}, h.opts())
}

// opts sends the plugins' log lines to the daemon's logger.
func (h *hostPlugins) opts() host.Options {
	return host.Options{Logger: host.SlogLogger(h.d.log, "plugin")}
}

func (h *hostPlugins) Close() {
	closeAgents(h.d)
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, c := range h.clients {
		c.Close()
		delete(h.clients, k)
	}
}
