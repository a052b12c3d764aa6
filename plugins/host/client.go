// Package host runs plugins for Lockstep: it launches a plugin binary with
// go-plugin over gRPC, checks its SHA-256 at every launch, puts a deadline
// on every call, survives the plugin crashing, and manages the directory of
// installed plugins.
package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Errors a caller may act on.
var (
	// ErrChecksum: the binary on disk is not the one that was installed.
	ErrChecksum = errors.New("host: plugin checksum mismatch")
	// ErrProtocol: the plugin speaks another protocol version.
	ErrProtocol = errors.New("host: plugin protocol mismatch")
	// ErrCrashed: the plugin process exited (or stopped answering on its
	// socket and was killed) during a call; the next call relaunches it.
	ErrCrashed = errors.New("host: plugin process exited")
)

// Call names one call of sdk.Plugin, for per-call deadlines.
type Call string

// The calls of sdk.Plugin.
const (
	CallInfo         Call = "Info"
	CallConfigSchema Call = "ConfigSchema"
	CallValidate     Call = "Validate"
	CallPrepare      Call = "Prepare"
	CallFreeze       Call = "Freeze"
	CallThaw         Call = "Thaw"
	CallHealth       Call = "Health"
	CallStop         Call = "Stop"
	CallStart        Call = "Start"
)

// DefaultTimeouts are the deadlines the host puts on each call whose
// context carries none, so that no call to a plugin is unbounded. A
// caller's own deadline (a policy's quiesce_timeout) is used as it is.
// Freeze and Thaw get the 10 s quiesce bound; Prepare, Stop and Start may
// move data and get minutes.
var DefaultTimeouts = map[Call]time.Duration{
	CallInfo:         10 * time.Second,
	CallConfigSchema: 10 * time.Second,
	CallValidate:     30 * time.Second,
	CallPrepare:      5 * time.Minute,
	CallFreeze:       10 * time.Second,
	CallThaw:         10 * time.Second,
	CallHealth:       10 * time.Second,
	CallStop:         5 * time.Minute,
	CallStart:        5 * time.Minute,
}

// Options tune how plugins are run. The zero value is usable.
type Options struct {
	// Timeouts override DefaultTimeouts per call; they apply to calls
	// whose context has no deadline.
	Timeouts map[Call]time.Duration
	// StartTimeout bounds a launch, handshake included (default 20 s).
	StartTimeout time.Duration
	// Logger receives go-plugin's and the plugin's log lines (default:
	// warnings and errors to stderr).
	Logger hclog.Logger
	// Stderr receives the plugin's raw stderr (default: the Logger).
	Stderr io.Writer
}

func (o Options) timeout(c Call) time.Duration {
	if d, ok := o.Timeouts[c]; ok && d > 0 {
		return d
	}
	return DefaultTimeouts[c]
}

// Spec says how to launch one plugin.
type Spec struct {
	Name   string   // for errors and logs
	Path   string   // the executable
	Args   []string // its arguments (the hidden subcommand of a built-in)
	SHA256 string   // lower-case hex of the executable; checked at every launch
}

// Client is an sdk.Plugin backed by a plugin process. It launches the
// process at the first call and again after the process died; calls are
// safe for concurrent use.
type Client struct {
	spec Spec
	sum  []byte
	opts Options

	mu   sync.Mutex
	proc *plugin.Client
	rpc  sdk.Plugin
}

var _ sdk.Plugin = (*Client)(nil)

// New returns a client for spec; nothing is launched yet.
func New(spec Spec, opts Options) (*Client, error) {
	sum, err := hex.DecodeString(spec.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin %q: invalid sha256 %q", spec.Name, spec.SHA256)
	}
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "plugin." + spec.Name, Level: hclog.Warn, Output: os.Stderr})
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 20 * time.Second
	}
	return &Client{spec: spec, sum: sum, opts: opts}, nil
}

// Builtin returns a client for the built-in plugin name, served by this
// executable through `lockstep plugin serve-builtin NAME`. The executable's
// checksum is taken now, so a lockstep binary replaced while running
// launches no built-ins until it restarts.
func Builtin(name string, opts Options) (*Client, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("plugin %q: finding the lockstep executable: %w", name, err)
	}
	sum, err := FileSHA256(exe)
	if err != nil {
		return nil, fmt.Errorf("plugin %q: %w", name, err)
	}
	return New(Spec{Name: name, Path: exe, Args: []string{"plugin", "serve-builtin", name}, SHA256: sum}, opts)
}

// FileSHA256 returns the lower-case hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Close stops the plugin process, if one runs.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		c.proc.Kill()
		c.proc, c.rpc = nil, nil
	}
	return nil
}

// launch returns the running plugin, starting one if needed.
func (c *Client) launch() (sdk.Plugin, *plugin.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil && !c.proc.Exited() {
		return c.rpc, c.proc, nil
	}
	if c.proc != nil {
		c.proc.Kill() // reap and clean up the dead one
		c.proc, c.rpc = nil, nil
	}
	stderr := c.opts.Stderr
	proc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginSet(),
		Cmd:              exec.Command(c.spec.Path, c.spec.Args...),
		SecureConfig:     &plugin.SecureConfig{Checksum: c.sum, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     c.opts.StartTimeout,
		Logger:           c.opts.Logger,
		Stderr:           stderr,
	})
	cp, err := proc.Client()
	if err != nil {
		proc.Kill()
		return nil, nil, c.launchError(err)
	}
	raw, err := cp.Dispense(sdk.PluginName)
	if err != nil {
		proc.Kill()
		return nil, nil, fmt.Errorf("plugin %q: %w", c.spec.Name, err)
	}
	rpc, ok := raw.(sdk.Plugin)
	if !ok {
		proc.Kill()
		return nil, nil, fmt.Errorf("plugin %q: dispensed %T, not a plugin", c.spec.Name, raw)
	}
	c.proc, c.rpc = proc, rpc
	return rpc, proc, nil
}

func (c *Client) launchError(err error) error {
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return fmt.Errorf("plugin %q: %s is not the binary that was installed (sha256 differs from %s); reinstall it with `lockstep plugin install`: %w", c.spec.Name, c.spec.Path, c.spec.SHA256, ErrChecksum)
	case strings.Contains(strings.ToLower(err.Error()), "incompatible api version"):
		return fmt.Errorf("plugin %q: %v; this lockstep speaks protocol %d: %w", c.spec.Name, err, sdk.ProtocolVersion, ErrProtocol)
	}
	return fmt.Errorf("plugin %q: launching %s: %w", c.spec.Name, c.spec.Path, err)
}

// call runs f against the plugin with the host's deadline for call, and
// turns a dead process into ErrCrashed (the next call relaunches it).
func (c *Client) call(ctx context.Context, call Call, f func(context.Context, sdk.Plugin) error) error {
	rpc, proc, err := c.launch()
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.timeout(call))
		defer cancel()
	}
	err = f(ctx, rpc)
	if err == nil {
		return nil
	}
	if c.exited(proc, err) {
		c.forget(proc)
		return fmt.Errorf("plugin %q: %s: %w (%v)", c.spec.Name, call, ErrCrashed, err)
	}
	if errors.Is(err, context.DeadlineExceeded) && !c.answers(proc) {
		// Wedged: the call timed out and the process no longer answers
		// even a ping (a deadlock, a stopped process). Calls would only
		// time out again: kill it, and the next call starts a fresh one
		// (every built-in's Thaw works from a new process).
		killHard(proc)
		c.forget(proc)
		return fmt.Errorf("plugin %q: %s: %w: it stopped answering and was killed (%v)", c.spec.Name, call, ErrCrashed, err)
	}
	return fmt.Errorf("plugin %q: %s: %w", c.spec.Name, call, err)
}

// pingTimeout bounds the health ping that tells a slow plugin call from a
// wedged plugin process.
var pingTimeout = 2 * time.Second

// answers reports whether proc still answers go-plugin's health ping.
func (c *Client) answers(proc *plugin.Client) bool {
	cp, err := proc.Client()
	if err != nil {
		return false
	}
	done := make(chan error, 1)
	go func() { done <- cp.Ping() }()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(pingTimeout):
		return false
	}
}

// exited reports whether the process died. A dead process shows first as
// an unreachable connection; the exit itself is seen a moment later.
func (c *Client) exited(proc *plugin.Client, err error) bool {
	if proc.Exited() {
		return true
	}
	if !errors.Is(err, sdk.ErrUnreachable) {
		return false
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if proc.Exited() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Unreachable but alive: it is of no use, so restart it next time.
	killHard(proc)
	proc.Kill()
	return true
}

// killHard sends SIGKILL to proc's process. go-plugin's Kill first asks
// the plugin to shut down and waits for that answer for as long as the
// process lives, so for a process that answers nothing it would never
// return.
func killHard(proc *plugin.Client) {
	if rc := proc.ReattachConfig(); rc != nil && rc.Pid > 0 {
		_ = syscall.Kill(rc.Pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !proc.Exited() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Client) forget(proc *plugin.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == proc {
		c.proc.Kill()
		c.proc, c.rpc = nil, nil
	}
}

// Info implements sdk.Plugin.
func (c *Client) Info(ctx context.Context) (out sdk.Info, err error) {
	err = c.call(ctx, CallInfo, func(ctx context.Context, p sdk.Plugin) (err error) {
		out, err = p.Info(ctx)
		return err
	})
	return out, err
}

// ConfigSchema implements sdk.Plugin.
func (c *Client) ConfigSchema(ctx context.Context) (out sdk.Schema, err error) {
	err = c.call(ctx, CallConfigSchema, func(ctx context.Context, p sdk.Plugin) (err error) {
		out, err = p.ConfigSchema(ctx)
		return err
	})
	return out, err
}

// Validate implements sdk.Plugin.
func (c *Client) Validate(ctx context.Context, app sdk.App) (out sdk.Diagnostics, err error) {
	err = c.call(ctx, CallValidate, func(ctx context.Context, p sdk.Plugin) (err error) {
		out, err = p.Validate(ctx, app)
		return err
	})
	return out, err
}

// Prepare implements sdk.Plugin.
func (c *Client) Prepare(ctx context.Context, app sdk.App) error {
	return c.call(ctx, CallPrepare, func(ctx context.Context, p sdk.Plugin) error { return p.Prepare(ctx, app) })
}

// Freeze implements sdk.Plugin. Evidence over sdk.MaxEvidence is refused
// and the app thawed.
func (c *Client) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (out sdk.Evidence, err error) {
	err = c.call(ctx, CallFreeze, func(ctx context.Context, p sdk.Plugin) (err error) {
		out, err = p.Freeze(ctx, app, hold)
		return err
	})
	if errors.Is(err, sdk.ErrEvidenceTooLarge) {
		// The plugin's SDK thaws before refusing; a plugin built otherwise
		// may not have, and Thaw is idempotent.
		if terr := c.Thaw(context.WithoutCancel(ctx), app); terr != nil {
			err = errors.Join(err, terr)
		}
	}
	return out, err
}

// Thaw implements sdk.Plugin.
func (c *Client) Thaw(ctx context.Context, app sdk.App) error {
	return c.call(ctx, CallThaw, func(ctx context.Context, p sdk.Plugin) error { return p.Thaw(ctx, app) })
}

// Health implements sdk.Plugin.
func (c *Client) Health(ctx context.Context, app sdk.App) (out sdk.Health, err error) {
	err = c.call(ctx, CallHealth, func(ctx context.Context, p sdk.Plugin) (err error) {
		out, err = p.Health(ctx, app)
		return err
	})
	return out, err
}

// Stop implements sdk.Plugin.
func (c *Client) Stop(ctx context.Context, app sdk.App) error {
	return c.call(ctx, CallStop, func(ctx context.Context, p sdk.Plugin) error { return p.Stop(ctx, app) })
}

// Start implements sdk.Plugin.
func (c *Client) Start(ctx context.Context, app sdk.App) error {
	return c.call(ctx, CallStart, func(ctx context.Context, p sdk.Plugin) error { return p.Start(ctx, app) })
}
