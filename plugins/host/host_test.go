package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// The example vendor plugin, built once per variant into a directory that
// TestMain removes.
var (
	buildDir  string
	buildMu   sync.Mutex
	buildDone = map[string]string{}
)

func TestMain(m *testing.M) {
	if os.Getenv("LOCKSTEP_TEST_HOST") != "" {
		os.Exit(hostProcess())
	}
	// Builtin launches this executable the way it launches lockstep.
	if len(os.Args) == 4 && os.Args[1] == "plugin" && os.Args[2] == "serve-builtin" {
		sdk.Serve(echoPlugin{name: os.Args[3]})
		os.Exit(0)
	}
	d, err := os.MkdirTemp("", "lockstep-plugin-build-")
	if err != nil {
		panic(err)
	}
	buildDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// buildPlugin builds examples/plugins/marker-file with ldflags and returns
// the path of the binary.
func buildPlugin(t testing.TB, ldflags string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildDone[ldflags]; ok {
		return p
	}
	out := filepath.Join(buildDir, fmt.Sprintf("marker-file-%d", len(buildDone)))
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", ldflags, "github.com/lockstep-io/lockstep/examples/plugins/marker-file")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the example plugin: %v\n%s", err, b)
	}
	buildDone[ldflags] = out
	return out
}

func testOptions(t testing.TB) Options {
	return Options{Logger: hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: testWriter{t}})}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// installed installs the plain example plugin into a fresh directory.
func installed(t *testing.T) (*Manager, Manifest) {
	t.Helper()
	m := NewManager(filepath.Join(t.TempDir(), "plugins"), testOptions(t))
	man, err := m.Install(context.Background(), buildPlugin(t, ""), "")
	if err != nil {
		t.Fatal(err)
	}
	return m, man
}

func client(t *testing.T, m *Manager, name string) *Client {
	t.Helper()
	c, err := m.Client(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func app(t *testing.T, extra sdk.Config) (sdk.App, string) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := sdk.Config{"state_file": state}
	for k, v := range extra {
		cfg[k] = v
	}
	return sdk.App{Service: "svc", Name: "app1", Volumes: []string{"data"}, Config: cfg}, state
}

func readState(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// waitState polls the state file until it reads want or d passes.
func waitState(t *testing.T, path, want string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if readState(path) == want {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("state is %q after %s, want %q", readState(path), d, want)
	return 0
}

func TestRoundTrip(t *testing.T) {
	m, man := installed(t)
	if man.Name != "marker-file" || man.Version != "0.1.0" || man.Protocol != sdk.ProtocolVersion || len(man.SHA256) != 64 {
		t.Fatalf("manifest %+v", man)
	}
	c := client(t, m, "marker-file")
	ctx := context.Background()
	sc, err := c.ConfigSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawDefault bool
	for _, a := range sc.Attributes {
		if a.Name == "evidence_bytes" {
			sawDefault = a.Default == int64(0) && a.Type == sdk.Number
		}
	}
	if !sawDefault || len(sc.Attributes) != 4 {
		t.Fatalf("schema %+v", sc)
	}
	a, state := app(t, sdk.Config{"hang_in_freeze": false, "evidence_bytes": int64(10)})
	if d, err := c.Validate(ctx, a); err != nil || len(d) != 0 {
		t.Fatalf("validate: %v %v", d, err)
	}
	if err := c.Prepare(ctx, a); err != nil {
		t.Fatal(err)
	}
	ev, err := c.Freeze(ctx, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev["hold"] != "5s" || ev["padding"] != "xxxxxxxxxx" || readState(state) != "frozen" {
		t.Fatalf("evidence %v, state %q", ev, readState(state))
	}
	if err := c.Thaw(ctx, a); err != nil || readState(state) != "thawed" {
		t.Fatalf("thaw: %v, state %q", err, readState(state))
	}
	if h, err := c.Health(ctx, a); err != nil || !h.OK || h.Detail != "state thawed" {
		t.Fatalf("health %+v %v", h, err)
	}
	if err := c.Stop(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	// A hold of 5 s must not have thawed anything behind the host's back:
	// the log has freeze and thaw once each.
	log, _ := os.ReadFile(state + ".log")
	if strings.Count(string(log), " frozen ") != 1 || strings.Count(string(log), " thawed ") != 1 {
		t.Fatalf("log:\n%s", log)
	}
}

func TestEvidenceTooLarge(t *testing.T) {
	m, _ := installed(t)
	c := client(t, m, "marker-file")
	a, state := app(t, sdk.Config{"evidence_bytes": int64(sdk.MaxEvidence)})
	_, err := c.Freeze(context.Background(), a, 5*time.Second)
	if !errors.Is(err, sdk.ErrEvidenceTooLarge) || !strings.Contains(err.Error(), `plugin "marker-file"`) {
		t.Fatalf("got %v", err)
	}
	if s := readState(state); s != "thawed" {
		t.Fatalf("state %q after refused evidence", s)
	}
}

func TestReplacedBinaryRefused(t *testing.T) {
	m, man := installed(t)
	c := client(t, m, "marker-file")
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Another build (other version string) put in place of the binary.
	other, err := os.ReadFile(buildPlugin(t, "-X main.version=6.6.6"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(man.Binary+".new", other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(man.Binary+".new", man.Binary); err != nil {
		t.Fatal(err)
	}
	_, err = c.Info(context.Background())
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), `plugin "marker-file"`) {
		t.Fatalf("replaced binary: got %v", err)
	}
	t.Log(err)
}

func TestProtocolMismatchRefused(t *testing.T) {
	m := NewManager(t.TempDir(), testOptions(t))
	bin := buildPlugin(t, "-X github.com/lockstep-io/lockstep/plugins/sdk.protocolOverride=2")
	_, err := m.Install(context.Background(), bin, "")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	if l, _ := m.List(); len(l) != 0 {
		t.Fatalf("installed anyway: %+v", l)
	}
	if ents, _ := os.ReadDir(m.Dir()); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestHangInFreeze(t *testing.T) {
	m, _ := installed(t)
	opts := testOptions(t)
	opts.Timeouts = map[Call]time.Duration{CallFreeze: 300 * time.Millisecond}
	m.opts = opts
	c := client(t, m, "marker-file")
	a, state := app(t, sdk.Config{"hang_in_freeze": true})
	hold := 1500 * time.Millisecond
	start := time.Now()
	_, err := c.Freeze(context.Background(), a, hold)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `plugin "marker-file": Freeze`) {
		t.Fatalf("got %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the host's deadline of 300ms took %s", took)
	}
	if s := readState(state); s != "frozen" {
		t.Fatalf("state %q right after the deadline", s)
	}
	// Nobody calls Thaw: the plugin's watchdog must, once hold elapses.
	waitState(t, state, "thawed", 5*time.Second)
	if el := time.Since(start); el < hold-50*time.Millisecond {
		t.Fatalf("thawed after %s, before the hold of %s", el, hold)
	}
	// The plugin still serves, from the same process: a slow call to a
	// process that answers pings is no reason to kill it.
	pid := pluginPID(t, c)
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pluginPID(t, c) != pid {
		t.Fatal("the plugin process was replaced after a call timed out while it still answered")
	}
}

// pluginPID is the process id of c's running plugin.
func pluginPID(t *testing.T, c *Client) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		t.Fatal("no plugin process")
	}
	return c.proc.ReattachConfig().Pid
}

// TestWedgedPluginRestarted: a plugin process that answers nothing (here
// stopped with SIGSTOP) is killed when a call to it times out, and the next
// call runs in a fresh process.
func TestWedgedPluginRestarted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("waits for the stop in /proc")
	}
	m, _ := installed(t)
	opts := testOptions(t)
	opts.Timeouts = map[Call]time.Duration{CallInfo: 300 * time.Millisecond}
	m.opts = opts
	old := pingTimeout
	pingTimeout = 300 * time.Millisecond
	t.Cleanup(func() { pingTimeout = old })
	c := client(t, m, "marker-file")
	// The calls that must succeed carry their own deadline: only the call
	// to the stopped plugin runs under the host's 300 ms, so a loaded
	// machine cannot fail them.
	if _, err := c.Info(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	pid := pluginPID(t, c)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	waitStopped(t, pid)
	start := time.Now()
	_, err := c.Info(context.Background())
	if !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), "stopped answering") {
		t.Fatalf("a call to a stopped plugin: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("giving up on the wedged plugin took %s", took)
	}
	if syscall.Kill(pid, 0) == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
			t.Fatalf("the wedged plugin process %d still runs", pid)
		}
	}
	if _, err := c.Info(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatalf("the call after the restart: %v", err)
	}
	if pluginPID(t, c) == pid {
		t.Fatal("the next call went to the wedged process")
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitStopped waits until every thread of process pid is stopped. kill(2)
// returns once SIGSTOP is queued: the kernel wakes one thread to carry out
// the group stop, and until that thread has run, which on a loaded machine
// takes milliseconds, the others go on and can answer a call.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		states, err := threadStates(pid)
		if err != nil {
			t.Fatalf("process %d: %v", pid, err)
		}
		if strings.Trim(states, "Tt") == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped 5s after SIGSTOP: its threads are in states %q", pid, states)
		}
		time.Sleep(time.Millisecond)
	}
}

// threadStates returns the state letter (R, S, T, ...) of each thread of
// process pid, from /proc/PID/task/TID/stat.
func threadStates(pid int) (string, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return "", err
	}
	var states []byte
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return "", err
		}
		// "TID (COMM) STATE ...": COMM may hold anything, ')' included.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			return "", fmt.Errorf("unexpected %s", b)
		}
		states = append(states, b[i+2])
	}
	if len(states) == 0 {
		return "", errors.New("no threads")
	}
	return string(states), nil
}

func TestCrashInFreeze(t *testing.T) {
	m, _ := installed(t)
	c := client(t, m, "marker-file")
	a, state := app(t, sdk.Config{"crash_in_freeze": true})
	_, err := c.Freeze(context.Background(), a, 5*time.Second)
	if !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), `plugin "marker-file"`) {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
	// The host is alive (we are running) and the next call relaunches.
	a.Config["crash_in_freeze"] = false
	if err := c.Thaw(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if s := readState(state); s != "thawed" {
		t.Fatalf("state %q", s)
	}
	log, _ := os.ReadFile(state + ".log")
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 2 || strings.Fields(lines[0])[2] == strings.Fields(lines[1])[2] {
		t.Fatalf("want a freeze and a thaw by two processes:\n%s", log)
	}
}

// hostProcess is the child of TestHostKilled: a host that freezes an app
// and waits to be killed.
func hostProcess() int {
	c, err := New(Spec{Name: "marker-file", Path: os.Getenv("PLUGIN_PATH"), SHA256: os.Getenv("PLUGIN_SHA256")}, Options{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	a := sdk.App{Service: "svc", Name: "app1", Config: sdk.Config{"state_file": os.Getenv("STATE_FILE")}}
	if _, err := c.Freeze(context.Background(), a, time.Minute); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("frozen")
	time.Sleep(time.Hour)
	return 0
}

func TestHostKilled(t *testing.T) {
	bin := buildPlugin(t, "")
	sum, err := FileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "LOCKSTEP_TEST_HOST=1", "PLUGIN_PATH="+bin, "PLUGIN_SHA256="+sum, "STATE_FILE="+state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "frozen" {
		t.Fatalf("host said %q", line)
	}
	pluginPID := lastPID(t, state)
	t.Cleanup(func() { syscall.Kill(pluginPID, syscall.SIGKILL) })
	if s := readState(state); s != "frozen" {
		t.Fatalf("state %q", s)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The hold is a minute; the thaw must come from noticing the host died.
	took := waitState(t, state, "thawed", 10*time.Second)
	t.Logf("thawed %s after the host was killed", took)
	// And the orphaned plugin exits.
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pluginPID, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still running after its host died", pluginPID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastPID returns the pid of the last line of the state log.
func lastPID(t *testing.T, state string) int {
	t.Helper()
	b, err := os.ReadFile(state + ".log")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var pid int
	if _, err := fmt.Sscan(strings.Fields(lines[len(lines)-1])[2], &pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// echoPlugin stands in for a built-in: it reports its name.
type echoPlugin struct{ name string }

func (p echoPlugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: p.name, Version: "builtin", Protocol: sdk.ProtocolVersion}, nil
}
func (echoPlugin) ConfigSchema(context.Context) (sdk.Schema, error) { return sdk.Schema{}, nil }
func (echoPlugin) Validate(context.Context, sdk.App) (sdk.Diagnostics, error) {
	return nil, nil
}
func (echoPlugin) Prepare(context.Context, sdk.App) error { return sdk.ErrUnsupported }
func (echoPlugin) Freeze(context.Context, sdk.App, time.Duration) (sdk.Evidence, error) {
	return sdk.Evidence{"n": 1}, nil
}
func (echoPlugin) Thaw(context.Context, sdk.App) error { return nil }
func (echoPlugin) Health(context.Context, sdk.App) (sdk.Health, error) {
	return sdk.Health{OK: true}, nil
}
func (echoPlugin) Stop(context.Context, sdk.App) error  { return sdk.ErrUnsupported }
func (echoPlugin) Start(context.Context, sdk.App) error { return sdk.ErrUnsupported }

func TestBuiltinThroughOwnExecutable(t *testing.T) {
	c, err := Builtin("echo", testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	in, err := c.Info(ctx)
	if err != nil || in.Name != "echo" || in.Protocol != sdk.ProtocolVersion {
		t.Fatalf("info %+v %v", in, err)
	}
	// ErrUnsupported crosses the process boundary as itself.
	if err := c.Stop(ctx, sdk.App{Name: "a"}); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("stop: %v", err)
	}
	ev, err := c.Freeze(ctx, sdk.App{Name: "a"}, time.Second)
	if err != nil || ev["n"] != float64(1) {
		t.Fatalf("freeze %v %v", ev, err)
	}
}

func TestConcurrentCallsShareOneProcess(t *testing.T) {
	m, _ := installed(t)
	c := client(t, m, "marker-file")
	a, state := app(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 8 {
		wg.Go(func() {
			if err := c.Prepare(context.Background(), a); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(state + ".log")
	pids := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		pids[strings.Fields(l)[2]] = true
	}
	if strings.Count(string(log), "prepare") != 8 || len(pids) != 1 {
		t.Fatalf("want 8 prepares by one process:\n%s", log)
	}
}
