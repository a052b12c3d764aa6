package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

func app(cfg sdk.Config) sdk.App {
	if _, ok := cfg["timeout"]; !ok {
		cfg["timeout"] = DefaultTimeout
	}
	if _, ok := cfg["on_error"]; !ok {
		cfg["on_error"] = "fail"
	}
	return sdk.App{Service: "svc", Name: "hooks", Volumes: []string{"data", "wal"}, Config: cfg}
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestSchema(t *testing.T) {
	got, err := New().ConfigSchema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range got.Attributes {
		names = append(names, a.Name+":"+string(a.Type))
	}
	want := []string{"freeze:list(string)", "thaw:list(string)", "health:list(string)", "stop:list(string)", "start:list(string)", "timeout:duration", "on_error:string", "host:string"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("attributes %v, want %v", names, want)
	}
	for _, a := range got.Attributes {
		switch a.Name {
		case "timeout":
			if a.Default != DefaultTimeout {
				t.Errorf("timeout default %v", a.Default)
			}
		case "on_error":
			if a.Default != "fail" || !reflect.DeepEqual(a.OneOf, []string{"fail", "continue"}) {
				t.Errorf("on_error %+v", a)
			}
		case "freeze", "thaw":
			if !a.Required || !a.NonEmpty {
				t.Errorf("%s must be required and non-empty", a.Name)
			}
		}
	}
}

func TestFreezeJSONEvidenceAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	a := app(sdk.Config{
		"freeze": sh(`printf '{"lsn":"0/16B3748","who":"%s/%s","vols":"%s","hold":"%s"}' "$LOCKSTEP_SERVICE" "$LOCKSTEP_APP" "$LOCKSTEP_VOLUMES" "$LOCKSTEP_HOLD"`),
		"thaw":   []string{"/bin/touch", filepath.Join(dir, "thawed")},
	})
	ev, err := New().Freeze(context.Background(), a, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := sdk.Evidence{"lsn": "0/16B3748", "who": "svc/hooks", "vols": "data,wal", "hold": "1.5"}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("evidence %v, want %v", ev, want)
	}
	if err := New().Thaw(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "thawed")); err != nil {
		t.Fatalf("thaw command did not run: %v", err)
	}
}

func TestFreezePlainStdout(t *testing.T) {
	a := app(sdk.Config{"freeze": []string{"/bin/echo", "frozen", "[1,2]"}, "thaw": []string{"/bin/true"}})
	ev, err := New().Freeze(context.Background(), a, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev["exit_status"] != 0 || ev["stdout"] != "frozen [1,2]" {
		t.Fatalf("evidence %v", ev)
	}
	// A JSON array is not an object: still plain output.
	a.Config["freeze"] = []string{"/bin/echo", "[1,2]"}
	ev, _ = New().Freeze(context.Background(), a, time.Second)
	if ev["stdout"] != "[1,2]" {
		t.Fatalf("evidence %v", ev)
	}
	// Long output is truncated.
	a.Config["freeze"] = sh(`head -c 100000 /dev/zero | tr '\0' x`)
	ev, _ = New().Freeze(context.Background(), a, time.Second)
	if s, _ := ev["stdout"].(string); len(s) > maxEvidenceStdout+8 || !strings.HasSuffix(s, "…") {
		t.Fatalf("stdout of %d bytes kept", len(s))
	}
}

func TestFreezeFailureThawsAndReportsStderr(t *testing.T) {
	dir := t.TempDir()
	a := app(sdk.Config{
		"freeze": sh(`echo "cannot reach the database" >&2; exit 3`),
		"thaw":   []string{"/bin/touch", filepath.Join(dir, "thawed")},
	})
	_, err := New().Freeze(context.Background(), a, time.Second)
	if err == nil {
		t.Fatal("freeze succeeded")
	}
	for _, w := range []string{`app "hooks" freeze`, "status 3", "cannot reach the database"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "thawed")); err != nil {
		t.Fatal("a failed freeze did not run the thaw command")
	}
}

func TestOnErrorContinue(t *testing.T) {
	a := app(sdk.Config{
		"freeze":   sh(`echo oops >&2; exit 1`),
		"thaw":     []string{"/bin/false"},
		"stop":     []string{"/bin/false"},
		"on_error": "continue",
	})
	ev, err := New().Freeze(context.Background(), a, time.Second)
	if err != nil {
		t.Fatalf("freeze with on_error=continue: %v", err)
	}
	if ev["exit_status"] != 1 || ev["on_error"] != "continue" || !strings.Contains(ev["error"].(string), "oops") {
		t.Fatalf("evidence %v", ev)
	}
	if err := New().Thaw(context.Background(), a); err != nil {
		t.Fatalf("thaw with on_error=continue: %v", err)
	}
	if err := New().Stop(context.Background(), a); err != nil {
		t.Fatalf("stop with on_error=continue: %v", err)
	}
	a.Config["on_error"] = "fail"
	if err := New().Thaw(context.Background(), a); err == nil {
		t.Fatal("thaw with on_error=fail succeeded")
	}
}

// A hung command is killed at the timeout with everything it started.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	a := app(sdk.Config{
		// The child sleeps in the background; the shell waits for it.
		"freeze":  sh(`sleep 60 & echo $! > ` + pidFile + `; wait`),
		"thaw":    []string{"/bin/true"},
		"timeout": 300 * time.Millisecond,
	})
	start := time.Now()
	_, err := New().Freeze(context.Background(), a, time.Second)
	if err == nil || !strings.Contains(err.Error(), "killed after") {
		t.Fatalf("err = %v, want killed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("freeze returned after %s", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for syscall.Kill(pid, 0) == nil && !zombie(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// The caller's deadline counts too, not only the configured timeout.
func TestContextDeadline(t *testing.T) {
	a := app(sdk.Config{"freeze": []string{"/bin/sleep", "60"}, "thaw": []string{"/bin/true"}})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := New().Freeze(ctx, a, time.Second); err == nil {
		t.Fatal("freeze succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %s", d)
	}
}

func TestHealthStopStart(t *testing.T) {
	dir := t.TempDir()
	a := app(sdk.Config{"freeze": []string{"/bin/true"}, "thaw": []string{"/bin/true"}})
	if _, err := New().Health(context.Background(), a); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("health without a command: %v", err)
	}
	if err := New().Stop(context.Background(), a); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("stop without a command: %v", err)
	}
	flag := filepath.Join(dir, "running")
	a.Config["health"] = []string{"/usr/bin/test", "-e", flag}
	a.Config["start"] = []string{"/bin/touch", flag}
	a.Config["stop"] = []string{"/bin/rm", "-f", flag}
	ctx := context.Background()
	if h, err := New().Health(ctx, a); err != nil || h.OK {
		t.Fatalf("health before start: %+v %v", h, err)
	}
	if err := New().Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	if h, err := New().Health(ctx, a); err != nil || !h.OK {
		t.Fatalf("health after start: %+v %v", h, err)
	}
	if err := New().Stop(ctx, a); err != nil {
		t.Fatal(err)
	}
	if h, _ := New().Health(ctx, a); h.OK {
		t.Fatal("healthy after stop")
	}
}

func TestValidate(t *testing.T) {
	a := app(sdk.Config{
		"freeze":   []string{"no-such-program-lockstep"},
		"thaw":     []string{"/bin/true"},
		"health":   []string{"/etc"},
		"on_error": "maybe",
	})
	diags, err := New().Validate(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, d := range diags {
		got[d.Attribute] = true
	}
	for _, w := range []string{"freeze", "health", "on_error"} {
		if !got[w] {
			t.Errorf("no diagnostic for %s: %+v", w, diags)
		}
	}
	if got["thaw"] {
		t.Errorf("diagnostic for a valid thaw: %+v", diags)
	}
}

// A daemon left holding stdout does not make a start command fail or hang.
func TestRunDaemonHoldingStdout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	start := time.Now()
	res, err := Run(context.Background(), Cmd{Argv: sh(`sleep 30 & echo $! > ` + pidFile + `; echo started`), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Stdout), "started") {
		t.Fatalf("stdout %q", res.Stdout)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
}
