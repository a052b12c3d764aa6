// Package daemon is `lockstep serve`: one process that opens a data
// directory, serves its volumes over iSCSI, hosts the orchestrator that takes
// each service's markers, and answers the HTTP API (package api) that the CLI
// and Prometheus talk to. Policies reach it through plan and apply, which
// change volumes, targets and schedules all together or not at all. A
// retention loop (retention.go) folds each service's history by its
// retention every --fold-interval, so the shared journal stays bounded:
// markers the keep rules select and the undo point of the last restore stay
// readable, the rest of the history beyond the window is folded away and
// the catalog marks the markers that went as expired.
//
// The API listens on TCP (default 127.0.0.1:7460) and every request, /metrics
// included, carries the token of DATA/api.token. It replaces the unix control
// socket of the first daemon: one transport, one client, and the token file
// (0600) grants exactly what the socket's mode did.
//
// Files the daemon keeps in the data directory besides the store's:
//
//	api.token   the API token, 0600, made at first start
//	api.addr    the API's address while the daemon runs (for the CLI)
//	policy.json the applied policy's source files (no secrets: env() and
//	            file() are resolved again at every start), 0600
//	catalog.db  the orchestrator's catalog (package boltcat)
//	plugins/    vendor plugins installed by `lockstep plugin install`
//	restores/   one durable record per restore (resume, undo)
//	exposures.json the live exposures and as-new volumes, served again
//	            after a restart (exposures.go)
//	pki/        the CA that certifies agents and the daemon's client
//	            certificate, keys 0600, made at the first `agent token`
//	agents/     enrolled agents: name, address, certificate serial
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// IQNPrefix names targets of volumes that no policy names.
const IQNPrefix = "iqn.2026-11.io.lockstep:"

// Version is reported by /v1/status.
var Version = "dev"

// Config configures a Daemon.
type Config struct {
	DataDir string
	// Policy, when set, is applied at start exactly as `lockstep apply`
	// would (refusing destroys and shrinks); otherwise the policy applied
	// last is loaded from the data directory.
	Policy []api.Source
	// ISCSIAddr is the portal to listen on (default 127.0.0.1:3260).
	ISCSIAddr string
	// APITLS serves the API over HTTPS with a certificate from the
	// daemon's CA (DATA/pki/ca.crt, the one agents trust), issued at start
	// for this machine's names and addresses.
	APITLS bool
	// ISCSIAdvertise is the portal (HOST:PORT) printed for exposures and
	// copies and shown by status; empty: see Daemon.Portal.
	ISCSIAdvertise string
	// ISCSIPoll is the target's iscsi.ServerConfig.PollSpin (0 the
	// default, negative never polls).
	ISCSIPoll time.Duration
	// Listen is the HTTP API's address (default api.DefaultAddr).
	Listen string
	Logger *slog.Logger
	Clock  clock.Clock
	// NewProtector builds the orchestrator the daemon hosts; nil takes
	// the default (see protector.go).
	NewProtector func(ctx context.Context, d *Daemon) (Protector, error)
	StoreOptions store.Options
	// JournalCache is the bytes of recent writes kept in memory for reads
	// (store.Options.JournalCache): zero takes DefaultJournalCache, a
	// negative value keeps none.
	JournalCache int64
	// RPOWebhook, when set, receives every RPO breach and recovery as a
	// JSON POST (rpo.Webhook).
	RPOWebhook string
	// FoldInterval is how often retention folds run (see retention.go):
	// zero takes DefaultFoldInterval, a negative value disables them.
	FoldInterval time.Duration
}

// Daemon runs the store, the iSCSI target, the orchestrator and the API.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	clk     clock.Clock
	st      *store.Store
	srv     *iscsi.Server
	iscsi   net.Listener
	apiL    net.Listener
	apiTLS  bool
	token   string
	prot    Protector
	started time.Time
	metrics *metrics

	applyMu sync.Mutex // one plan or apply at a time
	// hook, set by tests, runs before each apply step and fails it when it
	// returns an error.
	hook func(step string) error

	mu      sync.Mutex
	applied *appliedPolicy
	targets map[string]iscsi.TargetConfig // volume name -> its live target
	exposed map[string]*exposure
	io      map[string]*ioCounters // volume name -> counters of its LUN

	rs    *restores // see restore.go
	folds *folds    // see retention.go
}

type exposure struct {
	api.Exposure
	view *store.View
}

// New opens the data directory, the API token, the listeners and the
// applied policy; Serve starts serving.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.ISCSIAddr == "" {
		cfg.ISCSIAddr = "127.0.0.1:3260"
	}
	if cfg.Listen == "" {
		cfg.Listen = api.DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.FoldInterval == 0 {
		cfg.FoldInterval = DefaultFoldInterval
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
	}
	cfg.StoreOptions.Logger = cfg.Logger
	switch {
	case cfg.JournalCache == 0:
		cfg.StoreOptions.JournalCache = DefaultJournalCache()
	case cfg.JournalCache > 0:
		cfg.StoreOptions.JournalCache = cfg.JournalCache
	}
	if cfg.StoreOptions.Clock == nil {
		cfg.StoreOptions.Clock = cfg.Clock
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, started: cfg.Clock.Now(),
		targets: map[string]iscsi.TargetConfig{}, exposed: map[string]*exposure{}, io: map[string]*ioCounters{}, folds: newFolds()}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	var err error
	tok, created, err := api.LoadOrCreateToken(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	d.token = tok
	if created {
		d.log.Info("api token created", "file", filepath.Join(cfg.DataDir, api.TokenFile))
	}
	if d.st, err = store.Open(ctx, cfg.DataDir, cfg.StoreOptions); err != nil {
		return nil, err
	}
	if d.iscsi, err = net.Listen("tcp", cfg.ISCSIAddr); err != nil {
		return nil, fmt.Errorf("iscsi portal %s: %w", cfg.ISCSIAddr, err)
	}
	if d.apiL, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("api listen address %s: %w (another `lockstep serve` running? choose one with --listen)", cfg.Listen, err)
	}
	if cfg.APITLS {
		if err := d.serveTLS(); err != nil {
			return nil, err
		}
	} else if ta, ok := d.apiL.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		d.log.Warn("the API listens beyond loopback without TLS: its token crosses the network in clear; use --api-tls or listen on 127.0.0.1", "listen", d.apiL.Addr().String())
	}
	d.srv = iscsi.NewServer(iscsi.ServerConfig{Portal: d.iscsi.Addr().String(), Logger: cfg.Logger, PollSpin: cfg.ISCSIPoll})
	newProt := cfg.NewProtector
	if newProt == nil {
		newProt = defaultProtector
	}
	if d.prot, err = newProt(ctx, d); err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	d.metrics = newMetrics(d)
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	if err := d.openRestores(ctx); err != nil {
		return nil, err
	}
	if err := d.restoreExposures(ctx); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// start brings up what the applied policy (or cfg.Policy) declares.
func (d *Daemon) start(ctx context.Context) error {
	if d.cfg.Policy != nil {
		// The applied policy is what --policy is planned against, so that
		// its changes are checked (no silent destroy or shrink) and its
		// version goes on; it is not activated.
		if ap, err := loadApplied(d.cfg.DataDir); err != nil {
			d.log.Warn("the previously applied policy does not load; --policy replaces it", "err", err)
		} else {
			d.applied = ap
		}
		res, err := d.apply(ctx, d.cfg.Policy, false, false)
		if err != nil {
			return fmt.Errorf("policy given with --policy: %w", err)
		}
		if res.Plan.Invalid {
			return fmt.Errorf("policy given with --policy is invalid:\n%s", res.Plan.Diagnostics)
		}
		return d.serveUnmanaged()
	}
	ap, err := loadApplied(d.cfg.DataDir)
	if err != nil {
		return err
	}
	if ap != nil {
		if err := d.activate(ctx, ap); err != nil {
			return err
		}
	}
	return d.serveUnmanaged()
}

// serveUnmanaged gives every volume that has no target yet (no policy
// names it) a default one, so a data directory is reachable without a
// policy.
func (d *Daemon) serveUnmanaged() error {
	for _, vi := range d.st.Volumes() {
		d.mu.Lock()
		_, has := d.targets[vi.Name]
		managed := d.applied != nil && d.applied.volume(vi.Name) != nil
		d.mu.Unlock()
		if has || managed || vi.Parent != "" {
			continue
		}
		v, err := d.st.Volume(vi.Name)
		if err != nil {
			return err
		}
		if err := d.addTarget(iscsi.TargetConfig{IQN: DefaultIQN(vi.Name), Alias: vi.Name}, v); err != nil {
			return err
		}
	}
	return nil
}

// VolumeName is the store name of a service's volume.
func VolumeName(service, volume string) string { return service + "/" + volume }

func (d *Daemon) addTarget(tc iscsi.TargetConfig, v *store.Volume) error {
	d.mu.Lock()
	c := d.io[v.Name()]
	if c == nil {
		c = &ioCounters{}
		d.io[v.Name()] = c
	}
	d.mu.Unlock()
	tc.LUNs = []iscsi.LUNConfig{{ID: 0, Device: &countingDevice{Device: v, c: c}}}
	if err := d.srv.AddTarget(tc); err != nil {
		return fmt.Errorf("volume %q target %s: %w", v.Name(), tc.IQN, err)
	}
	d.mu.Lock()
	d.targets[v.Name()] = tc
	d.mu.Unlock()
	d.log.Info("iscsi target", "iqn", tc.IQN, "volume", v.Name(), "portal", d.Portal(), "chap", tc.CHAP != nil, "initiators", len(tc.AllowedInitiators))
	return nil
}

func (d *Daemon) removeTarget(volume string) error {
	d.mu.Lock()
	tc, ok := d.targets[volume]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	if err := d.srv.RemoveTarget(tc.IQN); err != nil {
		return fmt.Errorf("volume %q target %s: %w", volume, tc.IQN, err)
	}
	d.mu.Lock()
	delete(d.targets, volume)
	d.mu.Unlock()
	return nil
}

var iqnUnsafe = regexp.MustCompile(`[^a-z0-9.-]+`)

// DefaultIQN derives a target name from a volume name.
func DefaultIQN(volume string) string {
	return IQNPrefix + iqnUnsafe.ReplaceAllString(strings.ToLower(strings.ReplaceAll(volume, "/", ".")), "-")
}

// Store is the daemon's data directory.
func (d *Daemon) Store() *store.Store { return d.st }

// Logger is the daemon's logger.
func (d *Daemon) Logger() *slog.Logger { return d.log }

// Clock is the daemon's clock.
func (d *Daemon) Clock() clock.Clock { return d.clk }

// Portal is the iSCSI portal address.
//
// It is Config.ISCSIAdvertise when set, else the listener's address; a
// listener on a wildcard address (0.0.0.0, ::) advertises the machine's
// first non-loopback address (or 127.0.0.1 when it has none) with its
// port, since the wildcard is no address an initiator can reach.
func (d *Daemon) Portal() string {
	if d.cfg.ISCSIAdvertise != "" {
		return d.cfg.ISCSIAdvertise
	}
	a, ok := d.iscsi.Addr().(*net.TCPAddr)
	if !ok || !a.IP.IsUnspecified() {
		return d.iscsi.Addr().String()
	}
	ip := firstHostIP()
	if ip == nil {
		ip = net.IPv4(127, 0, 0, 1) // no other address: only local initiators can reach it
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

// firstHostIP is the first global unicast address of the machine's
// interfaces, IPv4 before IPv6; nil when there is none.
func firstHostIP() net.IP {
	var v6 net.IP
	for _, ip := range hostIPs() {
		if !ip.IsGlobalUnicast() {
			continue
		}
		if ip.To4() != nil {
			return ip
		}
		if v6 == nil {
			v6 = ip
		}
	}
	return v6
}

// hostIPs are the machine's interface addresses other than loopback.
func hostIPs() []net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

// Addr is the HTTP API's address.
func (d *Daemon) Addr() string { return d.apiL.Addr().String() }

// Token is the API's bearer token (for in-process tests).
func (d *Daemon) Token() string { return d.token }

// Serve runs the iSCSI portal, the orchestrator and the API until ctx ends.
// It writes the API's address to DATA/api.addr for the CLI and removes it
// on return.
func (d *Daemon) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addrFile := filepath.Join(d.cfg.DataDir, api.AddrFile)
	if err := api.WriteFileAtomic(addrFile, []byte(d.URL()+"\n"), 0o644); err != nil {
		return fmt.Errorf("api address file: %w", err)
	}
	defer os.Remove(addrFile)
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); errc <- d.srv.Serve(ctx, d.iscsi) }()
	go func() { defer wg.Done(); errc <- d.serveAPI(ctx, d.apiL) }()
	go func() { defer wg.Done(); errc <- d.prot.Run(ctx) }()
	go func() { defer wg.Done(); errc <- d.foldLoop(ctx) }()
	d.log.Info("lockstep serving", "data", d.cfg.DataDir, "iscsi", d.Portal(), "api", d.Addr(), "orchestrator", d.prot.Kind())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, context.Canceled) || errors.Is(err, iscsi.ErrClosed) {
			err = nil
		}
	}
	cancel()
	d.rs.close()
	d.srv.Close()
	wg.Wait()
	d.log.Info("lockstep stopped", "data", d.cfg.DataDir)
	return err
}

// ParsePoint resolves --at: RFC 3339, a relative "-15m", or Unix nanoseconds.
func ParsePoint(now time.Time, s string) (time.Time, error) {
	if strings.HasPrefix(s, "-") {
		dur, err := time.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", s, err)
		}
		return now.Add(-dur), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	var ns int64
	if _, err := fmt.Sscanf(s, "%d", &ns); err == nil && fmt.Sprint(ns) == s {
		return time.Unix(0, ns), nil
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-23T14:00:00Z), a relative time (-15m) or Unix nanoseconds", s)
}

// Expose presents a volume as it was at a point in time as a new target:
// read-only, or a copy-on-write clone whose writes never touch the
// original's journal.
func (d *Daemon) Expose(ctx context.Context, req api.ExposeRequest) (*api.Exposure, error) {
	v, err := d.st.Volume(req.Volume)
	if err != nil {
		return nil, fmt.Errorf("expose %q: %w", req.Volume, err)
	}
	var at time.Time
	switch {
	case req.Marker != "" && req.At != "":
		return nil, errors.New("expose: give a time or a marker, not both")
	case req.Marker != "":
		m, ok := d.st.Marker(req.Marker)
		if !ok {
			return nil, fmt.Errorf("expose: no marker %q", req.Marker)
		}
		if !contains(m.Volumes, req.Volume) {
			return nil, fmt.Errorf("expose: marker %q does not cover volume %q (it covers %s)", req.Marker, req.Volume, strings.Join(m.Volumes, ", "))
		}
		at = time.Unix(0, m.TS)
	case req.At != "":
		if at, err = ParsePoint(d.clk.Now(), req.At); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("expose: give --at TIME or --marker ID")
	}
	ts := at.UnixNano()
	e := &exposure{Exposure: api.Exposure{Volume: req.Volume, At: at.UTC(), Marker: req.Marker, Writable: req.Writable, Portal: d.Portal()}}
	d.mu.Lock()
	base := d.targets[req.Volume].IQN
	d.mu.Unlock()
	if base == "" {
		base = DefaultIQN(req.Volume)
	}
	kind := "pit"
	if req.Writable {
		kind = "clone"
	}
	e.IQN = fmt.Sprintf("%s.%s-%x", base, kind, ts)
	var dev blockdev.Device
	if req.Writable {
		e.Clone = fmt.Sprintf("%s.clone-%x", req.Volume, ts)
		cv, err := d.st.Clone(ctx, req.Volume, ts, e.Clone)
		if err != nil {
			return nil, fmt.Errorf("expose %q writable: %w", req.Volume, err)
		}
		dev = cv
	} else {
		view, err := v.View(ctx, ts)
		if err != nil {
			return nil, fmt.Errorf("expose %q: %w", req.Volume, err)
		}
		e.view, dev = view, view
	}
	if err := d.srv.AddTarget(d.exposureTarget(e, dev)); err != nil {
		d.release(ctx, e)
		return nil, fmt.Errorf("expose %q: %w", req.Volume, err)
	}
	d.mu.Lock()
	d.exposed[e.IQN] = e
	d.mu.Unlock()
	d.saveExposures()
	d.log.Info("volume exposed", "volume", req.Volume, "at", e.At, "iqn", e.IQN, "writable", req.Writable)
	out := e.Exposure
	return &out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Unexpose removes an exposure's target, closing its sessions; a writable
// exposure's clone is deleted unless keep is set.
func (d *Daemon) Unexpose(ctx context.Context, iqn string, keep bool) error {
	d.mu.Lock()
	e := d.exposed[iqn]
	delete(d.exposed, iqn)
	d.mu.Unlock()
	if e == nil {
		return fmt.Errorf("unexpose: no exposure %q (see `lockstep volume list`): %w", iqn, errNotFound)
	}
	d.saveExposures()
	if err := d.srv.RemoveTarget(iqn); err != nil {
		return fmt.Errorf("unexpose %q: %w", iqn, err)
	}
	if keep {
		e.Clone = ""
	}
	return d.release(ctx, e)
}

func (d *Daemon) release(ctx context.Context, e *exposure) error {
	if e.view != nil {
		e.view.Close()
	}
	if e.Clone != "" {
		return d.st.DeleteVolume(ctx, e.Clone)
	}
	return nil
}

// Exposures lists the live exposures.
func (d *Daemon) Exposures() []api.Exposure {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]api.Exposure, 0, len(d.exposed))
	for _, e := range d.exposed {
		out = append(out, e.Exposure)
	}
	sortExposures(out)
	return out
}

// Volumes lists the volumes and their targets.
func (d *Daemon) Volumes() []api.VolumeStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []api.VolumeStatus{}
	for _, vi := range d.st.Volumes() {
		out = append(out, api.VolumeStatus{VolumeInfo: vi, IQN: d.targets[vi.Name].IQN})
	}
	return out
}

// Close stops serving and closes the orchestrator and the data directory.
func (d *Daemon) Close() error {
	if d.srv != nil {
		d.srv.Close()
	}
	if d.iscsi != nil {
		d.iscsi.Close()
	}
	if d.apiL != nil {
		d.apiL.Close()
	}
	d.mu.Lock()
	for _, e := range d.exposed {
		if e.view != nil {
			e.view.Close()
		}
	}
	d.mu.Unlock()
	if d.rs != nil {
		d.rs.close()
	}
	if d.folds != nil {
		// A fold still running (its context ended with Serve's) returns
		// before the store closes under it.
		d.folds.run.Lock()
		defer d.folds.run.Unlock()
	}
	var err error
	if d.prot != nil {
		err = d.prot.Close()
	}
	if d.st != nil {
		err = errors.Join(err, d.st.Close())
	}
	return err
}
