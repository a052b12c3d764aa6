package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/lockstep-io/lockstep/orchestrator/api"
	agentv1 "github.com/lockstep-io/lockstep/plugins/proto/lockstep/agent/v1"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// fakePlugin records the calls it gets.
type fakePlugin struct {
	mu     sync.Mutex
	calls  []string
	frozen bool
}

func (f *fakePlugin) rec(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakePlugin) isFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

func (f *fakePlugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "fake", Version: "1.0.0"}, nil
}
func (f *fakePlugin) ConfigSchema(context.Context) (sdk.Schema, error) { return sdk.Schema{}, nil }
func (f *fakePlugin) Validate(context.Context, sdk.App) (sdk.Diagnostics, error) {
	return nil, nil
}
func (f *fakePlugin) Prepare(_ context.Context, a sdk.App) error {
	f.rec("prepare " + a.Name)
	return nil
}
func (f *fakePlugin) Freeze(_ context.Context, a sdk.App, _ time.Duration) (sdk.Evidence, error) {
	f.rec("freeze " + a.Name)
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
	return sdk.Evidence{"where": "agent", "app": a.Name}, nil
}
func (f *fakePlugin) Thaw(_ context.Context, a sdk.App) error {
	f.rec("thaw " + a.Name)
	f.mu.Lock()
	f.frozen = false
	f.mu.Unlock()
	return nil
}
func (f *fakePlugin) Health(context.Context, sdk.App) (sdk.Health, error) {
	return sdk.Health{OK: true}, nil
}
func (f *fakePlugin) Stop(context.Context, sdk.App) error  { return sdk.ErrUnsupported }
func (f *fakePlugin) Start(context.Context, sdk.App) error { return nil }

type fakePlugins struct{ p *fakePlugin }

func (f fakePlugins) Open(t Target) (sdk.Plugin, error) {
	if t.Plugin != "fake" {
		return nil, errors.New("no plugin " + t.Plugin)
	}
	return f.p, nil
}
func (f fakePlugins) List() ([]string, []*agentv1.InstalledPlugin) { return []string{"fake"}, nil }
func (f fakePlugins) Close()                                       {}

// daemonSide is a PKI, a registry and the enrolment endpoint, as the
// daemon serves them.
type daemonSide struct {
	pki  *PKI
	reg  *Registry
	addr string
}

func newDaemonSide(t *testing.T, now func() time.Time) *daemonSide {
	t.Helper()
	dir := t.TempDir()
	pki, err := LoadOrCreatePKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := OpenRegistry(filepath.Join(dir, "agents"), pki, now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.AgentEnrollRequest
		json.NewDecoder(r.Body).Decode(&req)
		resp, err := reg.Enroll(req)
		if err != nil {
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
			return
		}
		json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return &daemonSide{pki: pki, reg: reg, addr: strings.TrimPrefix(srv.URL, "http://")}
}

// enrol enrols agent name advertised at addr and returns its directory.
func (ds *daemonSide) enrol(t *testing.T, name, addr string) string {
	t.Helper()
	tok, _, err := ds.reg.NewToken(name, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Enroll(context.Background(), EnrollConfig{Daemon: ds.addr, Token: tok, CAFingerprint: ds.pki.Fingerprint(), Name: name, Advertise: addr, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (ds *daemonSide) remote(t *testing.T, name, addr string) (*Remote, *[]error) {
	t.Helper()
	var mu sync.Mutex
	seen := &[]error{}
	r, err := Dial(RemoteConfig{Name: name, Addr: addr, PKI: ds.pki, Trusted: ds.reg.Trusted, Observe: func(err error) {
		mu.Lock()
		*seen = append(*seen, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, seen
}

// runAgent serves the agent of dir on l until the returned stop is called.
func runAgent(t *testing.T, dir string, l net.Listener, p *fakePlugin) (stop func()) {
	t.Helper()
	s, err := NewServer(ServerConfig{Dir: dir, Plugins: fakePlugins{p}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, l); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // a port just closed may linger briefly
		if l, err = net.Listen("tcp", addr); err == nil {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

var app = sdk.App{Service: "web", Name: "site"}

func TestEnrolAndRelay(t *testing.T) {
	ds := newDaemonSide(t, nil)
	l := listen(t, "")
	dir := ds.enrol(t, "web01", l.Addr().String())
	for _, f := range []string{KeyFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	p := &fakePlugin{}
	runAgent(t, dir, l, p)
	r, seen := ds.remote(t, "web01", l.Addr().String())
	ctx := context.Background()
	h, err := r.Hello(ctx)
	if err != nil || h.GetName() != "web01" {
		t.Fatalf("hello: %v %v", h, err)
	}
	rp := r.Plugin(Target{Plugin: "fake"})
	if err := rp.Prepare(ctx, app); err != nil {
		t.Fatal(err)
	}
	ev, err := rp.Freeze(ctx, app, 10*time.Second)
	if err != nil || ev["where"] != "agent" {
		t.Fatalf("freeze: %v %v", ev, err)
	}
	if err := rp.Thaw(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := rp.Stop(ctx, app); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("stop: %v, want ErrUnsupported across the agent", err)
	}
	if _, err := r.Plugin(Target{Plugin: "nope"}).Health(ctx, app); err == nil || !strings.Contains(err.Error(), "no plugin nope") {
		t.Fatalf("unknown plugin: %v", err)
	}
	if got := strings.Join(p.calls, ","); got != "prepare site,freeze site,thaw site" {
		t.Fatalf("calls %s", got)
	}
	for _, e := range *seen {
		if e != nil {
			t.Fatalf("observed a loss: %v", e)
		}
	}
}

func TestTokens(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ds := newDaemonSide(t, clock)
	enrol := func(tok, name string) error {
		_, err := Enroll(context.Background(), EnrollConfig{Daemon: ds.addr, Token: tok, CAFingerprint: ds.pki.Fingerprint(), Name: name, Advertise: "127.0.0.1:1", Dir: t.TempDir()})
		return err
	}
	tok, _, err := ds.reg.NewToken("web01", time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if err := enrol(tok, "web01"); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	tok, _, _ = ds.reg.NewToken("web01", time.Minute, false)
	if err := enrol(tok, "web01"); err != nil {
		t.Fatal(err)
	}
	if err := enrol(tok, "web01"); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reused token: %v", err)
	}
	if _, _, err := ds.reg.NewToken("web01", time.Minute, false); !errors.Is(err, ErrExists) {
		t.Fatalf("token for an enrolled name: %v", err)
	}
	tok, _, _ = ds.reg.NewToken("web02", time.Minute, false)
	_, err = Enroll(context.Background(), EnrollConfig{Daemon: ds.addr, Token: tok, CAFingerprint: "sha256:" + strings.Repeat("00", 32), Name: "web02", Advertise: "127.0.0.1:1", Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "refusing it") {
		t.Fatalf("wrong fingerprint: %v", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("the token is in an error")
	}
	// Re-enrolment with --replace revokes the old certificate.
	old, _ := ds.reg.Agent("web01")
	tok, _, _ = ds.reg.NewToken("web01", time.Minute, true)
	if err := enrol(tok, "web01"); err != nil {
		t.Fatal(err)
	}
	if ds.reg.Trusted("web01", old.Serial) {
		t.Fatal("a replaced certificate is still trusted")
	}
	if _, err := ds.reg.Remove("web01"); err != nil {
		t.Fatal(err)
	}
	if _, ok := ds.reg.Agent("web01"); ok {
		t.Fatal("removed agent still enrolled")
	}
	// The registry survives a restart.
	reg, err := OpenRegistry(ds.reg.dir, ds.pki, clock)
	if err != nil || len(reg.Agents()) != 1 || reg.Agents()[0].Name != "web02" {
		t.Fatalf("reopened registry: %v %+v", err, reg.Agents())
	}
}

// The agent accepts only the daemon's client certificate.
func TestAgentRefusesOtherClients(t *testing.T) {
	ds := newDaemonSide(t, nil)
	l := listen(t, "")
	dir := ds.enrol(t, "web01", l.Addr().String())
	runAgent(t, dir, l, &fakePlugin{})
	agentCert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	otherDaemon := newDaemonSide(t, nil)
	for name, certs := range map[string][]tls.Certificate{
		"no client certificate":           nil,
		"another CA's daemon certificate": {otherDaemon.pki.client},
		"the agent's own certificate":     {agentCert},
	} {
		tc := &tls.Config{Certificates: certs, RootCAs: ds.pki.Pool(), ServerName: "web01", MinVersion: tls.VersionTLS13}
		conn, err := grpc.NewClient("passthrough:///"+l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = agentv1.NewAgentClient(conn).Hello(ctx, &agentv1.HelloRequest{})
		cancel()
		conn.Close()
		if err == nil {
			t.Fatalf("%s: the agent answered", name)
		}
	}
}

// The daemon refuses an agent whose certificate another CA issued, and a
// revoked one.
func TestDaemonRefusesAgents(t *testing.T) {
	ds, other := newDaemonSide(t, nil), newDaemonSide(t, nil)
	l := listen(t, "")
	runAgent(t, other.enrol(t, "web01", l.Addr().String()), l, &fakePlugin{})
	ds.enrol(t, "web01", l.Addr().String()) // the daemon knows web01, with its own CA
	r, seen := ds.remote(t, "web01", l.Addr().String())
	_, err := r.Hello(context.Background())
	if !errors.Is(err, ErrLost) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("agent of another CA: %v", err)
	}
	if len(*seen) != 1 || (*seen)[0] == nil {
		t.Fatalf("observed %v", *seen)
	}

	l2 := listen(t, "")
	dir := ds.enrol(t, "web02", l2.Addr().String())
	runAgent(t, dir, l2, &fakePlugin{})
	r2, _ := ds.remote(t, "web02", l2.Addr().String())
	if _, err := r2.Hello(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.reg.Remove("web02"); err != nil {
		t.Fatal(err)
	}
	r3, _ := ds.remote(t, "web02", l2.Addr().String()) // a new connection, a new handshake
	if _, err := r3.Hello(context.Background()); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked agent: %v", err)
	}
}

// A daemon whose connection closes mid-freeze leaves the app thawed by the
// agent; a stopped agent is lost at once and found again when it returns.
func TestLostAndReturned(t *testing.T) {
	ds := newDaemonSide(t, nil)
	l := listen(t, "")
	addr := l.Addr().String()
	dir := ds.enrol(t, "web01", addr)
	p := &fakePlugin{}
	stop := runAgent(t, dir, l, p)

	r, _ := ds.remote(t, "web01", addr)
	if _, err := r.Plugin(Target{Plugin: "fake"}).Freeze(context.Background(), app, time.Hour); err != nil {
		t.Fatal(err)
	}
	r.Close() // the daemon goes away without thawing
	deadline := time.Now().Add(5 * time.Second)
	for p.isFrozen() {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not thaw after the daemon's connection closed")
		}
		time.Sleep(20 * time.Millisecond)
	}

	r, seen := ds.remote(t, "web01", addr)
	rp := r.Plugin(Target{Plugin: "fake"})
	if err := rp.Prepare(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	stop()
	t0 := time.Now()
	for i := 0; i < 3; i++ {
		if err := rp.Prepare(context.Background(), app); !errors.Is(err, ErrLost) {
			t.Fatalf("prepare on a stopped agent: %v", err)
		}
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("three calls to a stopped agent took %s", d)
	}
	runAgent(t, dir, listen(t, addr), p)
	if err := rp.Prepare(context.Background(), app); err != nil {
		t.Fatalf("prepare after the agent returned: %v", err)
	}
	s := *seen
	if s[0] != nil || s[1] == nil || s[len(s)-1] != nil {
		t.Fatalf("observed %v", s)
	}
}

// A freeze whose hold elapses without a thaw is thawed on the agent, by the
// plugin the freeze went to, while the daemon's connection stays open.
func TestHoldBoundsRemoteFreeze(t *testing.T) {
	ds := newDaemonSide(t, nil)
	l := listen(t, "")
	p := &fakePlugin{}
	runAgent(t, ds.enrol(t, "web01", l.Addr().String()), l, p)
	r, _ := ds.remote(t, "web01", l.Addr().String())
	if _, err := r.Plugin(Target{Plugin: "fake"}).Freeze(context.Background(), app, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.isFrozen() {
		if time.Now().After(deadline) {
			t.Fatal("the hold elapsed and the app is still frozen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := r.Hello(context.Background()); err != nil {
		t.Fatalf("the connection should still be up: %v", err)
	}
}
