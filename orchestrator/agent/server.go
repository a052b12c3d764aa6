package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	"github.com/lockstep-io/lockstep/plugins/builtin"
	"github.com/lockstep-io/lockstep/plugins/host"
	agentv1 "github.com/lockstep-io/lockstep/plugins/proto/lockstep/agent/v1"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Plugins opens the plugins an agent runs.
type Plugins interface {
	// Open returns the plugin t names, checking t's pins; the same plugin
	// may be returned for repeated calls.
	Open(t Target) (sdk.Plugin, error)
	// List names the plugins available, for Hello.
	List() (builtin []string, installed []*agentv1.InstalledPlugin)
	// Close stops every plugin process.
	Close()
}

// ServerConfig configures an agent.
type ServerConfig struct {
	Dir     string
	Version string
	Logger  *slog.Logger
	// Plugins, nil for the built-ins of this executable and the vendor
	// plugins installed in DIR/plugins, each in a process of its own.
	Plugins Plugins
}

// Server is `lockstep agent serve`.
type Server struct {
	cfg   ServerConfig
	id    Config
	tls   *tls.Config
	r     *router
	log   *slog.Logger
	conns sync.WaitGroup
}

// NewServer loads the agent's identity from cfg.Dir.
func NewServer(cfg ServerConfig) (*Server, error) {
	id, err := LoadConfig(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Plugins == nil {
		cfg.Plugins = &localPlugins{m: host.NewManager(filepath.Join(cfg.Dir, PluginsSubdir), host.Options{}), clients: map[Target]*host.Client{}}
	}
	tc, err := agentTLS(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, id: id, tls: tc, log: cfg.Logger}
	s.r = &router{p: cfg.Plugins, log: cfg.Logger, last: map[string]Target{}, frozen: map[string]frozenApp{}}
	return s, nil
}

// Name is the agent's enrolled name.
func (s *Server) Name() string { return s.id.Name }

// agentTLS accepts only a client certificate of the daemon: signed by the
// CA of enrolment, for client authentication, naming the daemon.
func agentTLS(dir string) (*tls.Config, error) {
	if err := checkKeyMode(filepath.Join(dir, KeyFile)); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("agent directory %s: %w", dir, err)
	}
	ca, _, err := readCert(filepath.Join(dir, AgentCAFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !hasURI(cs.PeerCertificates[0], daemonURI) {
				return errors.New("agent: the client certificate is not the daemon's")
			}
			return nil
		},
	}, nil
}

// Serve serves the daemon on l until ctx ends; then it thaws what is
// still frozen and stops the plugin processes.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.tls)),
		grpc.StatsHandler(s.r),
		// A daemon that vanishes without closing its connection (a cut
		// network) is noticed in about 15 s; the hold bounds the freeze
		// before that.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	if err := (&sdk.GRPCPlugin{Impl: s.r}).GRPCServer(nil, gs); err != nil {
		return err
	}
	agentv1.RegisterAgentServer(gs, &helloServer{s: s})
	s.log.Info("agent serving", "name", s.id.Name, "listen", l.Addr().String(), "daemon", s.id.Daemon)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		gs.GracefulStop()
	}()
	err := gs.Serve(l)
	close(done)
	s.r.thawAll("the agent is stopping")
	s.cfg.Plugins.Close()
	s.log.Info("agent stopped", "name", s.id.Name)
	return err
}

type helloServer struct {
	agentv1.UnimplementedAgentServer
	s *Server
}

func (h *helloServer) Hello(context.Context, *agentv1.HelloRequest) (*agentv1.HelloResponse, error) {
	b, in := h.s.cfg.Plugins.List()
	return &agentv1.HelloResponse{Name: h.s.id.Name, Version: h.s.cfg.Version, Protocol: sdk.ProtocolVersion, Builtin: b, Installed: in}, nil
}

// router is the sdk.Plugin the agent serves: each call goes to the plugin
// its metadata names. It also thaws every app frozen through it when the
// daemon's last connection closes (a daemon killed mid-freeze), before the
// hold would.
type router struct {
	p   Plugins
	log *slog.Logger

	mu     sync.Mutex
	last   map[string]Target // app key -> the plugin of its last call
	frozen map[string]frozenApp
	conns  int
}

type frozenApp struct {
	app sdk.App
	t   Target
}

var _ sdk.Plugin = (*router)(nil)

func appKey(a sdk.App) string { return a.Service + "\x00" + a.Name }

// target reads the call's plugin from its metadata; a call without any
// (the SDK watchdog thawing on its own) goes to the app's last plugin.
func (r *router) target(ctx context.Context, app *sdk.App) (Target, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	one := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	t := Target{Plugin: one(mdPlugin), SHA256: one(mdSHA256), Version: one(mdVersion)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t.Plugin == "" && app != nil {
		if lt, ok := r.last[appKey(*app)]; ok {
			return lt, nil
		}
	}
	if t.Plugin == "" {
		return t, errors.New("agent: the call names no plugin (metadata " + mdPlugin + ")")
	}
	if app != nil {
		r.last[appKey(*app)] = t
	}
	return t, nil
}

func (r *router) open(ctx context.Context, app *sdk.App) (sdk.Plugin, Target, error) {
	t, err := r.target(ctx, app)
	if err != nil {
		return nil, t, err
	}
	p, err := r.p.Open(t)
	return p, t, err
}

func (r *router) Info(ctx context.Context) (sdk.Info, error) {
	p, _, err := r.open(ctx, nil)
	if err != nil {
		return sdk.Info{}, err
	}
	return p.Info(ctx)
}

func (r *router) ConfigSchema(ctx context.Context) (sdk.Schema, error) {
	p, _, err := r.open(ctx, nil)
	if err != nil {
		return sdk.Schema{}, err
	}
	return p.ConfigSchema(ctx)
}

func (r *router) Validate(ctx context.Context, app sdk.App) (sdk.Diagnostics, error) {
	p, _, err := r.open(ctx, &app)
	if err != nil {
		return nil, err
	}
	return p.Validate(ctx, app)
}

func (r *router) Prepare(ctx context.Context, app sdk.App) error {
	p, _, err := r.open(ctx, &app)
	if err != nil {
		return err
	}
	return p.Prepare(ctx, app)
}

func (r *router) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	p, t, err := r.open(ctx, &app)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.frozen[appKey(app)] = frozenApp{app: app, t: t} // before: a hung Freeze is thawed too
	r.mu.Unlock()
	r.log.Info("freeze", "service", app.Service, "app", app.Name, "plugin", t.Plugin, "hold", hold)
	ev, err := p.Freeze(ctx, app, hold)
	if err != nil {
		r.log.Warn("freeze failed", "service", app.Service, "app", app.Name, "plugin", t.Plugin, "err", err)
	}
	return ev, err
}

func (r *router) Thaw(ctx context.Context, app sdk.App) error {
	p, t, err := r.open(ctx, &app)
	if err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.frozen, appKey(app))
	r.mu.Unlock()
	err = p.Thaw(ctx, app)
	r.log.Info("thaw", "service", app.Service, "app", app.Name, "plugin", t.Plugin, "err", err)
	return err
}

func (r *router) Health(ctx context.Context, app sdk.App) (sdk.Health, error) {
	p, _, err := r.open(ctx, &app)
	if err != nil {
		return sdk.Health{}, err
	}
	return p.Health(ctx, app)
}

func (r *router) Stop(ctx context.Context, app sdk.App) error {
	p, _, err := r.open(ctx, &app)
	if err != nil {
		return err
	}
	return p.Stop(ctx, app)
}

func (r *router) Start(ctx context.Context, app sdk.App) error {
	p, _, err := r.open(ctx, &app)
	if err != nil {
		return err
	}
	return p.Start(ctx, app)
}

// thawAll thaws every app frozen through the agent, in parallel.
func (r *router) thawAll(why string) {
	r.mu.Lock()
	apps := make([]frozenApp, 0, len(r.frozen))
	for k, f := range r.frozen {
		apps = append(apps, f)
		delete(r.frozen, k)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range apps {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := r.p.Open(f.t)
			if err == nil {
				err = p.Thaw(ctx, f.app)
			}
			if err != nil {
				r.log.Warn("thaw failed", "service", f.app.Service, "app", f.app.Name, "why", why, "err", err)
				return
			}
			r.log.Warn("thawed", "service", f.app.Service, "app", f.app.Name, "why", why)
		})
	}
	wg.Wait()
}

// The router sees the daemon's connections come and go.
var _ stats.Handler = (*router)(nil)

func (r *router) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (r *router) HandleRPC(context.Context, stats.RPCStats)                         {}
func (r *router) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (r *router) HandleConn(_ context.Context, s stats.ConnStats) {
	r.mu.Lock()
	switch s.(type) {
	case *stats.ConnBegin:
		r.conns++
		r.mu.Unlock()
	case *stats.ConnEnd:
		r.conns--
		last := r.conns == 0
		r.mu.Unlock()
		if last {
			go r.thawAll("the daemon's connection closed")
		}
	default:
		r.mu.Unlock()
	}
}

// localPlugins runs plugins through package host: built-ins from this
// executable, vendor plugins from the agent's plugin directory.
type localPlugins struct {
	m       *host.Manager
	mu      sync.Mutex
	clients map[Target]*host.Client
}

func (l *localPlugins) Open(t Target) (sdk.Plugin, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.clients[t]; c != nil {
		return c, nil
	}
	var c *host.Client
	var err error
	if _, ok := builtin.Lookup(t.Plugin); ok && t.SHA256 == "" {
		c, err = host.Builtin(t.Plugin, host.Options{})
	} else {
		c, err = l.vendor(t)
	}
	if err != nil {
		return nil, err
	}
	l.clients[t] = c
	return c, nil
}

func (l *localPlugins) vendor(t Target) (*host.Client, error) {
	man, err := l.m.Info(t.Plugin)
	if err != nil {
		return nil, fmt.Errorf("plugin %q is not built in and not installed on this agent: install it with `lockstep plugin install --plugin-dir %s`: %w", t.Plugin, l.m.Dir(), err)
	}
	if t.SHA256 != "" && !strings.EqualFold(t.SHA256, man.SHA256) {
		return nil, fmt.Errorf("plugin %q installed on this agent has sha256 %s, the policy pins %s: install the pinned build", t.Plugin, man.SHA256, t.SHA256)
	}
	if t.Version != "" && t.Version != man.Version {
		return nil, fmt.Errorf("plugin %q installed on this agent is version %s, the policy pins %s", t.Plugin, man.Version, t.Version)
	}
	return l.m.Client(t.Plugin)
}

func (l *localPlugins) List() ([]string, []*agentv1.InstalledPlugin) {
	var in []*agentv1.InstalledPlugin
	if ms, err := l.m.List(); err == nil {
		for _, m := range ms {
			in = append(in, &agentv1.InstalledPlugin{Name: m.Name, Version: m.Version, Sha256: m.SHA256})
		}
	}
	b := builtin.Names()
	sort.Strings(b)
	return b, in
}

func (l *localPlugins) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, c := range l.clients {
		c.Close()
		delete(l.clients, k)
	}
}

// Listen opens the agent's listener; a helper so that the CLI and tests
// agree on the default.
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = DefaultListen
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent listen address %s: %w", addr, err)
	}
	return l, nil
}
