package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/agent"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	agentv1 "github.com/lockstep-io/lockstep/plugins/proto/lockstep/agent/v1"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// hostApp is a plugin on the agent's host; it counts freezes and thaws.
type hostApp struct {
	mu             sync.Mutex
	freezes, thaws int
}

func (h *hostApp) Info(context.Context) (sdk.Info, error)           { return sdk.Info{Name: "exec"}, nil }
func (h *hostApp) ConfigSchema(context.Context) (sdk.Schema, error) { return sdk.Schema{}, nil }
func (h *hostApp) Validate(context.Context, sdk.App) (sdk.Diagnostics, error) {
	return nil, nil
}
func (h *hostApp) Prepare(context.Context, sdk.App) error { return nil }
func (h *hostApp) Freeze(_ context.Context, a sdk.App, _ time.Duration) (sdk.Evidence, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.freezes++
	return sdk.Evidence{"ran_on": "web01", "app": a.Name}, nil
}
func (h *hostApp) Thaw(context.Context, sdk.App) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.thaws++
	return nil
}
func (h *hostApp) Health(context.Context, sdk.App) (sdk.Health, error) {
	return sdk.Health{OK: true}, nil
}
func (h *hostApp) Stop(context.Context, sdk.App) error  { return nil }
func (h *hostApp) Start(context.Context, sdk.App) error { return nil }

type hostPluginsFake struct{ p *hostApp }

func (f hostPluginsFake) Open(agent.Target) (sdk.Plugin, error)        { return f.p, nil }
func (f hostPluginsFake) List() ([]string, []*agentv1.InstalledPlugin) { return []string{"exec"}, nil }
func (f hostPluginsFake) Close()                                       {}

const webHCL = `service "web" {
  volume "data" {
    size = "8MiB"
  }
  app "exec" "site" {
    volumes = ["data"]
    host    = "web01"
    freeze  = ["/bin/true"]
    thaw    = ["/bin/true"]
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "2h"
  }
}
`

// runHostAgent serves the agent of dir on addr in-process.
func runHostAgent(t *testing.T, dir, addr string, p *hostApp) (stop func()) {
	t.Helper()
	s, err := agent.NewServer(agent.ServerConfig{Dir: dir, Plugins: hostPluginsFake{p}})
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
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

func countType(t *testing.T, c *api.Client, typ string) int {
	t.Helper()
	es, err := c.Events(context.Background(), "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// The daemon in-process: the token endpoint needs the API token, the
// enrolment endpoint does not; markers go through the agent; a lost
// agent is one event and crash-consistent markers; its return and its
// removal.
func TestAgentThroughDaemon(t *testing.T) {
	d := startDaemon(t, "", policy(webHCL))
	ctx := context.Background()

	if _, err := api.New(d.Addr(), "wrong").AgentToken(ctx, api.AgentTokenRequest{Name: "web01"}); !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("token without the API token: %v", err)
	}
	tok, err := d.c.AgentToken(ctx, api.AgentTokenRequest{Name: "web01"})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	if _, err := agent.Enroll(ctx, agent.EnrollConfig{Daemon: d.Addr(), Token: tok.Token, CAFingerprint: tok.CAFingerprint, Name: "web01", Advertise: addr, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	var re *api.RemoteError
	if _, err := api.EnrollAgent(ctx, d.Addr(), api.AgentEnrollRequest{Name: "web01", TokenID: "x"}); !errors.As(err, &re) || re.Status != http.StatusForbidden {
		t.Fatalf("enrolment with a bad token: %v", err)
	}

	p := &hostApp{}
	stop := runHostAgent(t, dir, addr, p)
	m, err := d.c.Mark(ctx, "web")
	if err != nil || m.Class != catalog.ClassApp || len(m.Apps) != 1 || !strings.Contains(string(m.Apps[0].Evidence), "web01") {
		t.Fatalf("marker through the agent: %v %+v", err, m)
	}
	as, err := d.c.Agents(ctx)
	if err != nil || len(as) != 1 || as[0].State != api.AgentOK || len(as[0].Services) != 1 {
		t.Fatalf("agents: %v %+v", err, as)
	}

	stop()
	for i := 0; i < 2; i++ {
		m, err = d.c.Mark(ctx, "web")
		if err != nil || m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, `agent "web01"`) {
			t.Fatalf("marker with the agent stopped: %v %+v", err, m)
		}
	}
	if n := countType(t, d.c, EventAgentLost); n != 1 {
		t.Fatalf("%d agent_lost events, want 1", n)
	}
	runHostAgent(t, dir, addr, p)
	if m, err = d.c.Mark(ctx, "web"); err != nil || m.Class != catalog.ClassApp {
		t.Fatalf("marker after the agent returned: %v %+v", err, m)
	}
	if n := countType(t, d.c, EventAgentReturned); n != 1 {
		t.Fatalf("%d agent_returned events, want 1", n)
	}
	p.mu.Lock()
	if p.freezes != 2 || p.thaws < 2 {
		t.Errorf("freezes %d thaws %d", p.freezes, p.thaws)
	}
	p.mu.Unlock()

	if _, err := d.c.RemoveAgent(ctx, "web01"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.RemoveAgent(ctx, "web01"); !api.NotFound(err) {
		t.Fatalf("removing twice: %v", err)
	}
	if m, err = d.c.Mark(ctx, "web"); err != nil || m.Class != catalog.ClassCrash || !strings.Contains(m.Reason, "no agent is enrolled") {
		t.Fatalf("marker after removal: %v %+v", err, m)
	}
}
