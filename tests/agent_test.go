package tests

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/syncbuf"
)

// agentProc is a running `lockstep agent serve`.
type agentProc struct {
	cmd    *exec.Cmd
	logs   *syncbuf.Buffer
	exited chan struct{}
}

// serveAgent starts `lockstep agent serve` with env added and waits until
// it accepts connections.
func serveAgent(t *testing.T, bin, dir, listen string, env ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(bin, "agent", "serve", "--dir", dir, "--listen", listen, "--log-format", "json")
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LOCKSTEP_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	p := &agentProc{cmd: cmd, logs: &syncbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.kill() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("agent exited at start:\n%s", p.logs.String())
		default:
		}
		if i > 400 {
			t.Fatalf("agent never came up:\n%s", p.logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (p *agentProc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

type agentToken struct {
	Token         string `json:"token"`
	CAFingerprint string `json:"ca_fingerprint"`
}

func newAgentToken(t *testing.T, bin, d string, args ...string) agentToken {
	t.Helper()
	var tok agentToken
	out := mustRun(t, bin, 0, append([]string{"agent", "token", d, "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" || !strings.HasPrefix(tok.CAFingerprint, "sha256:") {
		t.Fatalf("agent token --json: %v\n%s", err, out)
	}
	return tok
}

type markerOut struct {
	ID, Class, Reason string
	Apps              []struct {
		App           string
		Froze, Thawed bool
		Evidence      json.RawMessage
	}
}

func markJSON(t *testing.T, bin, svc, d string) markerOut {
	t.Helper()
	var m markerOut
	out := mustRun(t, bin, 0, "mark", svc, d, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("mark --json: %v\n%s", err, out)
	}
	return m
}

func countEvents(t *testing.T, bin, d, typ string) int {
	t.Helper()
	var es []struct{ Type, Message string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "events", d, "--json")), &es); err != nil {
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

type agentOut struct {
	Name, State, Detail string
	Services            []string
}

func agentsJSON(t *testing.T, bin, d string) []agentOut {
	t.Helper()
	var as []agentOut
	out := mustRun(t, bin, 0, "agents", d, "--json")
	if err := json.Unmarshal([]byte(out), &as); err != nil {
		t.Fatalf("agents --json: %v\n%s", err, out)
	}
	return as
}

// An app on a protected host, end to end with the binary: enrolment
// (reused, expired and mis-fingerprinted tokens refused), app-consistent
// markers whose evidence comes from the agent's host, a lost agent making
// markers crash-consistent with one agent_lost event, its return, and its
// removal.
func TestAgentBinary(t *testing.T) {
	bin := lockstep(t)
	dir, work, agentDir := t.TempDir(), t.TempDir(), t.TempDir()
	srv := serveBin(t, bin, dir, "--log-format", "json")
	d := "--data=" + dir
	addr := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.addr")))
	listen := freePort(t)

	tok := newAgentToken(t, bin, d, "web01")
	if fi, err := os.Stat(filepath.Join(dir, "pki", "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", fi, err)
	}
	enroll := func(token, fp, name string) (string, int) {
		return runBin(t, bin, "agent", "enroll", "--daemon", addr, "--name", name, "--token", token,
			"--ca-fingerprint", fp, "--advertise", listen, "--dir", agentDir)
	}
	// A token for another name, a forged one, then the real enrolment.
	if out, code := enroll(tok.Token, tok.CAFingerprint, "web02"); code != 1 || !strings.Contains(out, `issued for agent "web01"`) {
		t.Fatalf("token used for another name: exit %d\n%s", code, out)
	}
	tok = newAgentToken(t, bin, d, "web01")
	forged := tok.Token[:17] + strings.Repeat("0", 64)
	if out, code := enroll(forged, tok.CAFingerprint, "web01"); code != 1 || !strings.Contains(out, "not signed with the token's secret") {
		t.Fatalf("forged token: exit %d\n%s", code, out)
	}
	mustContain(t, mustRun(t, bin, 0, "agent", "enroll", "--daemon", addr, "--name", "web01", "--token", tok.Token,
		"--ca-fingerprint", strings.ToUpper(strings.TrimPrefix(tok.CAFingerprint, "sha256:")), "--advertise", listen, "--dir", agentDir), "enrolled agent web01")
	if fi, err := os.Stat(filepath.Join(agentDir, "agent.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent key: %v %v", fi, err)
	}
	if out, code := enroll(tok.Token, tok.CAFingerprint, "web01"); code != 1 || !strings.Contains(out, "already used") {
		t.Fatalf("reused token: exit %d\n%s", code, out)
	}
	mustContain(t, mustRun(t, bin, 1, "agent", "token", "web01", d), "already enrolled", "--replace")
	short := newAgentToken(t, bin, d, "web03", "--ttl", "1s")
	time.Sleep(1500 * time.Millisecond)
	if out, code := enroll(short.Token, short.CAFingerprint, "web03"); code != 1 || !strings.Contains(out, "expired") {
		t.Fatalf("expired token: exit %d\n%s", code, out)
	}
	other := newAgentToken(t, bin, d, "web04")
	if out, code := runBin(t, bin, "agent", "enroll", "--daemon", addr, "--name", "web04", "--token", other.Token,
		"--ca-fingerprint", "sha256:"+strings.Repeat("ab", 32), "--advertise", listen, "--dir", t.TempDir()); code != 1 || !strings.Contains(out, "refusing it") {
		t.Fatalf("wrong CA fingerprint: exit %d\n%s", code, out)
	}
	mustRun(t, bin, 0, "agent", "remove", "web04", d)

	// The agent runs the exec plugin on "its" host: the evidence names the
	// agent's environment, which the daemon's lacks.
	agentEnv := "AGENT_WHERE=agent-web01"
	ag := serveAgent(t, bin, agentDir, listen, agentEnv)
	state := filepath.Join(work, "state")
	pol := `service "web" {
  volume "data" {
    size = "8MiB"
  }
  app "exec" "site" {
    volumes = ["data"]
    host    = "web01"
    freeze  = ["/bin/sh", "-c", "echo frozen >> ` + state + `; printf '{\"where\": \"%s\"}' \"$AGENT_WHERE\""]
    thaw    = ["/bin/sh", "-c", "echo thawed >> ` + state + `"]
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "2h"
  }
}
`
	mustRun(t, bin, 0, "apply", writePolicy(t, pol), d)
	m := markJSON(t, bin, "web", d)
	if m.Class != "app" || len(m.Apps) != 1 || !m.Apps[0].Froze || !m.Apps[0].Thawed || !strings.Contains(string(m.Apps[0].Evidence), "agent-web01") {
		t.Fatalf("marker through the agent: %+v\ndaemon:\n%s\nagent:\n%s", m, srv.logs.String(), ag.logs.String())
	}
	if got := readFile(t, state); got != "frozen\nthawed\n" {
		t.Fatalf("app hooks ran as %q", got)
	}
	as := agentsJSON(t, bin, d)
	if len(as) != 1 || as[0].Name != "web01" || as[0].State != "ok" || len(as[0].Services) != 1 || as[0].Services[0] != "web" {
		t.Fatalf("agents: %+v", as)
	}
	mustContain(t, mustRun(t, bin, 0, "agents", d), "web01", "ok", listen)

	// Lost: crash-consistent with the reason, one agent_lost event.
	ag.kill()
	for i := 0; i < 2; i++ {
		m = markJSON(t, bin, "web", d)
		if m.Class != "crash" || !strings.Contains(m.Reason, `agent "web01"`) {
			t.Fatalf("marker with the agent down: %+v", m)
		}
	}
	if n := countEvents(t, bin, d, "agent_lost"); n != 1 {
		t.Fatalf("%d agent_lost events, want 1", n)
	}
	if as := agentsJSON(t, bin, d); as[0].State != "lost" || as[0].Detail == "" {
		t.Fatalf("agents with web01 down: %+v", as)
	}

	// Back: app-consistent again, one agent_returned event.
	os.Remove(state)
	ag = serveAgent(t, bin, agentDir, listen, agentEnv)
	m = markJSON(t, bin, "web", d)
	if m.Class != "app" || !strings.Contains(string(m.Apps[0].Evidence), "agent-web01") {
		t.Fatalf("marker after the agent returned: %+v\n%s", m, ag.logs.String())
	}
	if n := countEvents(t, bin, d, "agent_returned"); n != 1 {
		t.Fatalf("%d agent_returned events, want 1", n)
	}

	// Removed: refused, and the markers say why.
	mustContain(t, mustRun(t, bin, 0, "agent", "remove", "web01", d), "removed agent web01", "revoked", "web")
	m = markJSON(t, bin, "web", d)
	if m.Class != "crash" || !strings.Contains(m.Reason, "no agent is enrolled") {
		t.Fatalf("marker after removal: %+v", m)
	}
	mustContain(t, mustRun(t, bin, 0, "agents", d), "No agents")
	mustRun(t, bin, 1, "agent", "remove", "web01", d)

	ag.kill()
	srv.stop(t)
	for _, logs := range []string{srv.logs.String(), ag.logs.String()} {
		for _, secret := range []string{tok.Token, strings.SplitN(tok.Token, ".", 2)[1], other.Token, "PRIVATE KEY"} {
			if strings.Contains(logs, secret) {
				t.Fatalf("a secret is in the logs:\n%s", logs)
			}
		}
	}
}

// A daemon killed with SIGKILL in the middle of a freeze leaves the app
// thawed by the agent as soon as the daemon's connection closes, long
// before the quiesce timeout or the hold.
func TestAgentDaemonKilledMidFreezeBinary(t *testing.T) {
	bin := lockstep(t)
	dir, work, agentDir := t.TempDir(), t.TempDir(), t.TempDir()
	srv := serveBin(t, bin, dir)
	d := "--data=" + dir
	addr := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.addr")))
	listen := freePort(t)
	tok := newAgentToken(t, bin, d, "web01")
	mustRun(t, bin, 0, "agent", "enroll", "--daemon", addr, "--name", "web01", "--token", tok.Token,
		"--ca-fingerprint", tok.CAFingerprint, "--advertise", listen, "--dir", agentDir)
	ag := serveAgent(t, bin, agentDir, listen)

	state := filepath.Join(work, "state")
	mustRun(t, bin, 0, "apply", writePolicy(t, `service "files" {
  volume "data" {
    size = "8MiB"
  }
  app "exec" "files" {
    volumes = ["data"]
    host    = "web01"
    freeze  = ["/bin/sh", "-c", "echo frozen > `+state+`; exec sleep 20"]
    thaw    = ["/bin/sh", "-c", "echo thawed > `+state+`"]
  }
  consistency {
    every           = "1h"
    quiesce_timeout = "30s"
  }
  rpo {
    journal = "2h"
  }
}
`), d)
	mark := exec.Command(bin, "mark", "files", d)
	if err := mark.Start(); err != nil {
		t.Fatal(err)
	}
	defer mark.Wait()
	waitState := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			if b, _ := os.ReadFile(state); string(b) == want+"\n" {
				return
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(state)
				t.Fatalf("state %q after %s, want %q\nagent:\n%s", b, within, want, ag.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState("frozen", 20*time.Second)
	srv.cmd.Process.Kill()
	waitState("thawed", 5*time.Second)
	// The agent logs the thaw once the thaw command has returned: its own
	// (the daemon's connection closed) or the SDK watchdog's after the
	// cancelled Freeze, whichever came first.
	for i := 0; !strings.Contains(ag.logs.String(), "the daemon's connection closed") && !strings.Contains(ag.logs.String(), `"msg":"thaw"`); i++ {
		if i > 250 {
			t.Fatalf("the agent did not say why it thawed:\n%s", ag.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
