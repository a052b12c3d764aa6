package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/agent"
	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

// Agents (package agent) run the plugins of apps that name a host. The
// daemon keeps its CA in DATA/pki and its registry of agents and
// enrolment tokens in DATA/agents, both made at first use.
const (
	PKIDir    = "pki"
	AgentsDir = "agents"
)

// Event types of agents.
const (
	EventAgentLost     = "agent_lost"     // an agent stopped answering; its apps' markers are crash-consistent
	EventAgentReturned = "agent_returned" // it answers again
	EventAgentEnrolled = "agent_enrolled"
	EventAgentRemoved  = "agent_removed"
)

// agentProbeEvery is how often enrolled agents are probed between
// markers, so that a lost agent is an event even when no marker runs.
const agentProbeEvery = 15 * time.Second

// agentProbeTimeout bounds one probe.
const agentProbeTimeout = 5 * time.Second

// daemonAgents is the daemon's side of its agents. The Daemon struct is
// not this file's, so each daemon's is kept in agentsMap (see agents).
type daemonAgents struct {
	d   *Daemon
	reg *agent.Registry

	mu      sync.Mutex
	remotes map[string]*agent.Remote // by agent name
	health  map[string]*agentHealth
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  bool
}

type agentHealth struct {
	state   string // "" until first contact, api.AgentOK or api.AgentLost
	detail  string
	since   time.Time
	version string
	plugins []string
}

var (
	agentsMu  sync.Mutex
	agentsMap = map[*Daemon]*daemonAgents{}
)

// agents returns the daemon's agents, opening the PKI and the registry
// (creating the CA) at first use.
func (d *Daemon) agents() (*daemonAgents, error) {
	agentsMu.Lock()
	defer agentsMu.Unlock()
	if a := agentsMap[d]; a != nil {
		return a, nil
	}
	pki, err := agent.LoadOrCreatePKI(filepath.Join(d.cfg.DataDir, PKIDir))
	if err != nil {
		return nil, err
	}
	reg, err := agent.OpenRegistry(filepath.Join(d.cfg.DataDir, AgentsDir), pki, d.clk.Now)
	if err != nil {
		return nil, err
	}
	a := &daemonAgents{d: d, reg: reg, remotes: map[string]*agent.Remote{}, health: map[string]*agentHealth{}}
	agentsMap[d] = a
	if len(reg.Agents()) > 0 {
		a.startProbes()
	}
	return a, nil
}

// closeAgents closes the daemon's agent connections (the agents thaw
// anything still frozen) and stops probing.
func closeAgents(d *Daemon) {
	agentsMu.Lock()
	a := agentsMap[d]
	delete(agentsMap, d)
	agentsMu.Unlock()
	if a == nil {
		return
	}
	a.mu.Lock()
	a.closed = true
	if a.stop != nil {
		close(a.stop)
	}
	for n, r := range a.remotes {
		r.Close()
		delete(a.remotes, n)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

func (a *daemonAgents) startProbes() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stop != nil || a.closed {
		return
	}
	a.stop = make(chan struct{})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(agentProbeEvery)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-t.C:
			}
			a.probeAll(context.Background())
		}
	}()
}

// remote returns the connection to agent rec, remaking it when the agent
// was enrolled again.
func (a *daemonAgents) remote(rec agent.Record) (*agent.Remote, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("the daemon is stopping")
	}
	if r := a.remotes[rec.Name]; r != nil && r.Addr() == rec.Advertise {
		return r, nil
	} else if r != nil {
		r.Close()
	}
	name := rec.Name
	r, err := agent.Dial(agent.RemoteConfig{Name: name, Addr: rec.Advertise, PKI: a.reg.PKI(), Trusted: a.reg.Trusted,
		Observe: func(err error) { a.observe(name, err) }})
	if err != nil {
		return nil, err
	}
	a.remotes[name] = r
	return r, nil
}

// observe records the outcome of a call to agent name and makes the
// transitions events: lost once, returned once.
func (a *daemonAgents) observe(name string, err error) {
	now := a.d.clk.Now()
	a.mu.Lock()
	h := a.health[name]
	if h == nil {
		h = &agentHealth{}
		a.health[name] = h
	}
	prev := h.state
	if err == nil {
		h.detail = ""
		if prev != api.AgentOK {
			h.state, h.since = api.AgentOK, now
		}
	} else {
		h.detail = err.Error()
		if prev != api.AgentLost {
			h.state, h.since = api.AgentLost, now
		}
	}
	state := h.state
	a.mu.Unlock()
	switch {
	case state == api.AgentLost && prev != api.AgentLost:
		svcs := a.d.servicesOnHost(name)
		a.d.log.Warn("agent lost", "agent", name, "services", svcs, "err", err)
		a.event(EventAgentLost, catalog.Warning, name, svcs,
			fmt.Sprintf("agent %q lost: %v; markers of %s are crash-consistent until it returns", name, err, listOrNone(svcs)))
	case state == api.AgentOK && prev == api.AgentLost:
		svcs := a.d.servicesOnHost(name)
		a.d.log.Info("agent returned", "agent", name)
		a.event(EventAgentReturned, catalog.Info, name, svcs, fmt.Sprintf("agent %q answers again", name))
	}
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "no service"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// event records an agent event in the catalog (with the default
// orchestrator; a test's own orchestrator gets it in the log only).
func (a *daemonAgents) event(typ, sev, name string, svcs []string, msg string) {
	p, ok := a.d.prot.(*protector)
	if !ok {
		return
	}
	data, _ := json.Marshal(map[string]any{"agent": name, "services": svcs})
	if _, err := p.cat.AddEvent(context.Background(), catalog.Event{Time: a.d.clk.Now(), Type: typ, Severity: sev, Message: msg, Data: data}); err != nil {
		a.d.log.Error("agent event not recorded", "type", typ, "agent", name, "err", err)
	}
}

// servicesOnHost lists the applied policy's services with an app on host.
func (d *Daemon) servicesOnHost(host string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []string{}
	if d.applied == nil || d.applied.pol == nil {
		return out
	}
	for _, s := range d.applied.pol.Services {
		for _, app := range s.Apps {
			if app.Host() == host {
				out = append(out, s.Name)
				break
			}
		}
	}
	return out
}

// probe says hello to one agent; the outcome updates its state.
func (a *daemonAgents) probe(ctx context.Context, rec agent.Record) api.Agent {
	out := api.Agent{Name: rec.Name, Advertise: rec.Advertise, Serial: rec.Serial, Enrolled: rec.Enrolled, NotAfter: rec.NotAfter,
		Services: a.d.servicesOnHost(rec.Name)}
	r, err := a.remote(rec)
	if err != nil {
		a.observe(rec.Name, err)
	} else {
		ctx, cancel := context.WithTimeout(ctx, agentProbeTimeout)
		defer cancel()
		if hello, err := r.Hello(ctx); err == nil {
			plugins := append([]string{}, hello.GetBuiltin()...)
			for _, p := range hello.GetInstalled() {
				plugins = append(plugins, p.GetName()+"@"+p.GetVersion())
			}
			a.mu.Lock()
			if h := a.health[rec.Name]; h != nil {
				h.version, h.plugins = hello.GetVersion(), plugins
			}
			a.mu.Unlock()
		}
	}
	a.mu.Lock()
	if h := a.health[rec.Name]; h != nil {
		out.State, out.Detail, out.Since, out.Version, out.Plugins = h.state, h.detail, h.since, h.version, h.plugins
	}
	a.mu.Unlock()
	return out
}

// probeAll probes every agent in parallel.
func (a *daemonAgents) probeAll(ctx context.Context) []api.Agent {
	recs := a.reg.Agents()
	out := make([]api.Agent, len(recs))
	var wg sync.WaitGroup
	for i, rec := range recs {
		wg.Go(func() { out[i] = a.probe(ctx, rec) })
	}
	wg.Wait()
	return out
}

// remotePlugin is the plugin of an app that runs on an agent's host.
func (d *Daemon) remotePlugin(svc *model.Service, app *model.App) (sdk.Plugin, error) {
	hn := app.Host()
	a, err := d.agents()
	if err != nil {
		return nil, fmt.Errorf("app %q of service %q runs on host %q: %w", app.Name, svc.Name, hn, err)
	}
	rec, ok := a.reg.Agent(hn)
	if !ok {
		return nil, fmt.Errorf("app %q of service %q runs on host %q, where no agent is enrolled: enrol one (`lockstep agent token %s`, then `lockstep agent enroll` on that host)", app.Name, svc.Name, hn, hn)
	}
	r, err := a.remote(rec)
	if err != nil {
		return nil, fmt.Errorf("app %q of service %q: %w", app.Name, svc.Name, err)
	}
	t := agent.Target{Plugin: app.Plugin}
	d.mu.Lock()
	if d.applied != nil && d.applied.pol != nil {
		for _, p := range d.applied.pol.Plugins {
			if p.Name == app.Plugin && !p.Builtin() {
				t.SHA256, t.Version = p.SHA256, p.Version
			}
		}
	}
	d.mu.Unlock()
	return r.Plugin(t), nil
}

// agentRoutes registers the agent endpoints that need the API token. A
// daemon with enrolled agents opens them now, so that they are probed
// from the start.
func (d *Daemon) agentRoutes(mux *http.ServeMux) {
	if _, err := os.Stat(filepath.Join(d.cfg.DataDir, AgentsDir, agent.RegistryFile)); err == nil {
		if _, err := d.agents(); err != nil {
			d.log.Error("agents", "err", err)
		}
	}
	mux.HandleFunc("POST /v1/agents/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.AgentTokenRequest
		if !decode(w, r, &req) {
			return
		}
		a, err := d.agents()
		if err != nil {
			reply(w, nil, err)
			return
		}
		tok, exp, err := a.reg.NewToken(req.Name, req.TTL, req.Replace)
		if errors.Is(err, agent.ErrExists) {
			err = fmt.Errorf("%w: %w", errRefused, err)
		}
		if err != nil {
			reply(w, nil, err)
			return
		}
		d.log.Info("agent enrolment token issued", "agent", req.Name, "expires", exp)
		reply(w, api.AgentToken{Name: req.Name, Token: tok, Expires: exp, CAFingerprint: a.reg.PKI().Fingerprint()}, nil)
	})
	mux.HandleFunc("GET /v1/agents", func(w http.ResponseWriter, r *http.Request) {
		a, err := d.agents()
		if err != nil {
			reply(w, nil, err)
			return
		}
		reply(w, a.probeAll(r.Context()), nil)
	})
	mux.HandleFunc("DELETE /v1/agents/{name}", func(w http.ResponseWriter, r *http.Request) {
		a, err := d.agents()
		if err != nil {
			reply(w, nil, err)
			return
		}
		name := r.PathValue("name")
		rec, err := a.reg.Remove(name)
		if errors.Is(err, agent.ErrNoAgent) {
			err = fmt.Errorf("%w: %w", errNotFound, err)
		}
		if err != nil {
			reply(w, nil, err)
			return
		}
		a.mu.Lock()
		if rm := a.remotes[name]; rm != nil {
			rm.Close()
			delete(a.remotes, name)
		}
		delete(a.health, name)
		a.mu.Unlock()
		svcs := d.servicesOnHost(name)
		d.log.Info("agent removed", "agent", name, "serial", rec.Serial)
		a.event(EventAgentRemoved, catalog.Warning, name, svcs, fmt.Sprintf("agent %q removed; its certificate (serial %s) is revoked", name, rec.Serial))
		reply(w, api.Agent{Name: rec.Name, Advertise: rec.Advertise, Serial: rec.Serial, Enrolled: rec.Enrolled, NotAfter: rec.NotAfter, Services: svcs}, nil)
	})
}

// agentEnrollRoute serves POST /v1/agents/enroll ahead of the API token
// check: an enrolling agent has no API token; the enrolment token's MAC
// authenticates the request instead.
func (d *Daemon) agentEnrollRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/agents/enroll" {
			next.ServeHTTP(w, r)
			return
		}
		var req api.AgentEnrollRequest
		if !decode(w, r, &req) {
			return
		}
		a, err := d.agents()
		if err != nil {
			reply(w, nil, err)
			return
		}
		resp, err := a.reg.Enroll(req)
		if errors.Is(err, agent.ErrTokenRefused) {
			d.log.Warn("agent enrolment refused", "agent", req.Name, "remote", r.RemoteAddr, "err", err)
			writeJSON(w, http.StatusForbidden, api.Error{Error: err.Error()})
			return
		}
		if err != nil {
			reply(w, nil, err)
			return
		}
		a.mu.Lock()
		if rm := a.remotes[req.Name]; rm != nil {
			rm.Close()
			delete(a.remotes, req.Name)
		}
		delete(a.health, req.Name)
		a.mu.Unlock()
		svcs := d.servicesOnHost(req.Name)
		d.log.Info("agent enrolled", "agent", req.Name, "advertise", req.Advertise, "serial", resp.Serial)
		a.event(EventAgentEnrolled, catalog.Info, req.Name, svcs, fmt.Sprintf("agent %q enrolled at %s (certificate serial %s)", req.Name, req.Advertise, resp.Serial))
		a.startProbes()
		reply(w, resp, nil)
	})
}
