package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lockstep-io/lockstep/plugins/proto/lockstep/agent/v1"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// ErrLost wraps the errors of an agent that could not be reached.
var ErrLost = errors.New("agent: not reachable")

// Remote is the daemon's connection to one agent. It is safe for
// concurrent use; the connection is made at the first call and remade
// after the agent comes back.
type Remote struct {
	name, addr string
	conn       *grpc.ClientConn
	plugin     sdk.Plugin
	agent      agentv1.AgentClient
	observe    func(err error)
	lost       atomic.Bool
}

// RemoteConfig says how to reach an agent.
type RemoteConfig struct {
	Name string // the agent's name: its certificate must be issued for it
	Addr string // its advertised host:port
	PKI  *PKI
	// Trusted reports whether a certificate serial is the agent's current
	// one (not revoked, not replaced); checked at every handshake.
	Trusted func(name, serial string) bool
	// Observe is told the outcome of every call: nil when the agent
	// answered (even with an application error), ErrLost when it did not.
	Observe func(err error)
}

// Dial returns the connection to an agent; nothing is sent yet.
func Dial(cfg RemoteConfig) (*Remote, error) {
	tc := &tls.Config{
		Certificates: []tls.Certificate{cfg.PKI.client},
		RootCAs:      cfg.PKI.Pool(),
		ServerName:   cfg.Name,
		MinVersion:   tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			if !hasURI(leaf, agentURI(cfg.Name)) {
				return fmt.Errorf("the certificate at %s is not agent %q's", cfg.Addr, cfg.Name)
			}
			if sn := SerialString(leaf.SerialNumber); cfg.Trusted != nil && !cfg.Trusted(cfg.Name, sn) {
				return fmt.Errorf("the certificate of agent %q at %s (serial %s) is revoked or replaced", cfg.Name, cfg.Addr, sn)
			}
			return nil
		},
	}
	bc := backoff.DefaultConfig
	bc.MaxDelay = 2 * time.Second // a returning agent is used at the next marker
	conn, err := grpc.NewClient("passthrough:///"+cfg.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 5 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	)
	if err != nil {
		return nil, fmt.Errorf("agent %q at %s: %w", cfg.Name, cfg.Addr, err)
	}
	raw, err := (&sdk.GRPCPlugin{}).GRPCClient(context.Background(), nil, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	obs := cfg.Observe
	if obs == nil {
		obs = func(error) {}
	}
	return &Remote{name: cfg.Name, addr: cfg.Addr, conn: conn, plugin: raw.(sdk.Plugin), agent: agentv1.NewAgentClient(conn), observe: obs}, nil
}

// Name is the agent's name.
func (r *Remote) Name() string { return r.name }

// Addr is the agent's address.
func (r *Remote) Addr() string { return r.addr }

// Close closes the connection; an agent then thaws what this daemon froze.
func (r *Remote) Close() error { return r.conn.Close() }

// Hello asks the agent who it is; it is the health probe.
func (r *Remote) Hello(ctx context.Context) (*agentv1.HelloResponse, error) {
	r.before(ctx)
	h, err := r.agent.Hello(ctx, &agentv1.HelloRequest{})
	if err == nil && h.GetName() != r.name {
		err = fmt.Errorf("%w: the agent at %s calls itself %q, expected %q", ErrLost, r.addr, h.GetName(), r.name)
	} else if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
		err = r.lostError(err)
	}
	r.after(err)
	return h, err
}

// Plugin returns the plugin t on the agent.
func (r *Remote) Plugin(t Target) sdk.Plugin { return &remotePlugin{r: r, t: t} }

// reconnectWait bounds how long a call to a lost agent waits to find out
// whether it is back.
const reconnectWait = 2 * time.Second

// before lets a call to a lost agent find it back at once: gRPC keeps a
// failed channel in TRANSIENT_FAILURE, failing calls fast, until a
// reconnect after its backoff succeeds. When the agent's port answers
// again, the backoff is cut short and the call waits for the connection;
// when it does not, the call fails at once.
func (r *Remote) before(ctx context.Context) {
	if !r.lost.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, reconnectWait)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return
	}
	c.Close()
	r.conn.ResetConnectBackoff()
	for s := r.conn.GetState(); s != connectivity.Ready; s = r.conn.GetState() {
		if !r.conn.WaitForStateChange(ctx, s) {
			return
		}
	}
}

func (r *Remote) lostError(err error) error {
	st, _ := status.FromError(err)
	msg := err.Error()
	if st != nil {
		msg = st.Message()
	}
	return fmt.Errorf("%w: agent %q at %s: %s", ErrLost, r.name, r.addr, msg)
}

// after classifies a call's outcome: a transport failure loses the agent,
// any answer finds it; a deadline says nothing (the plugin may be slow).
func (r *Remote) after(err error) {
	switch {
	case err == nil:
		r.lost.Store(false)
		r.observe(nil)
	case errors.Is(err, ErrLost):
		r.lost.Store(true)
		r.observe(err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
	default:
		r.lost.Store(false)
		r.observe(nil)
	}
}

// remotePlugin relays sdk.Plugin calls to one plugin on the agent through
// the plugin protocol, naming the plugin in the call's metadata.
type remotePlugin struct {
	r *Remote
	t Target
}

var _ sdk.Plugin = (*remotePlugin)(nil)

func (p *remotePlugin) call(ctx context.Context, f func(context.Context, sdk.Plugin) error) error {
	p.r.before(ctx)
	kv := []string{mdPlugin, p.t.Plugin}
	if p.t.SHA256 != "" {
		kv = append(kv, mdSHA256, p.t.SHA256)
	}
	if p.t.Version != "" {
		kv = append(kv, mdVersion, p.t.Version)
	}
	err := f(metadata.AppendToOutgoingContext(ctx, kv...), p.r.plugin)
	if errors.Is(err, sdk.ErrUnreachable) {
		err = fmt.Errorf("%w: agent %q at %s: %v", ErrLost, p.r.name, p.r.addr, err)
	} else if err != nil {
		err = fmt.Errorf("on agent %q: %w", p.r.name, err)
	}
	p.r.after(err)
	return err
}

func (p *remotePlugin) Info(ctx context.Context) (out sdk.Info, err error) {
	err = p.call(ctx, func(ctx context.Context, c sdk.Plugin) (err error) { out, err = c.Info(ctx); return err })
	return out, err
}

func (p *remotePlugin) ConfigSchema(ctx context.Context) (out sdk.Schema, err error) {
	err = p.call(ctx, func(ctx context.Context, c sdk.Plugin) (err error) { out, err = c.ConfigSchema(ctx); return err })
	return out, err
}

func (p *remotePlugin) Validate(ctx context.Context, app sdk.App) (out sdk.Diagnostics, err error) {
	err = p.call(ctx, func(ctx context.Context, c sdk.Plugin) (err error) { out, err = c.Validate(ctx, app); return err })
	return out, err
}

func (p *remotePlugin) Prepare(ctx context.Context, app sdk.App) error {
	return p.call(ctx, func(ctx context.Context, c sdk.Plugin) error { return c.Prepare(ctx, app) })
}

func (p *remotePlugin) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (out sdk.Evidence, err error) {
	err = p.call(ctx, func(ctx context.Context, c sdk.Plugin) (err error) { out, err = c.Freeze(ctx, app, hold); return err })
	return out, err
}

func (p *remotePlugin) Thaw(ctx context.Context, app sdk.App) error {
	return p.call(ctx, func(ctx context.Context, c sdk.Plugin) error { return c.Thaw(ctx, app) })
}

func (p *remotePlugin) Health(ctx context.Context, app sdk.App) (out sdk.Health, err error) {
	err = p.call(ctx, func(ctx context.Context, c sdk.Plugin) (err error) { out, err = c.Health(ctx, app); return err })
	return out, err
}

func (p *remotePlugin) Stop(ctx context.Context, app sdk.App) error {
	return p.call(ctx, func(ctx context.Context, c sdk.Plugin) error { return c.Stop(ctx, app) })
}

func (p *remotePlugin) Start(ctx context.Context, app sdk.App) error {
	return p.call(ctx, func(ctx context.Context, c sdk.Plugin) error { return c.Start(ctx, app) })
}
