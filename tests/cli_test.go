// Package tests drives the built lockstep binary end to end.
package tests

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/syncbuf"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// lockstep builds the binary once per test run.
func lockstep(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lockstep")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/lockstep").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func runBin(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	return runBinEnv(t, bin, nil, args...)
}

// runBinEnv runs the binary with env added to the environment; the
// LOCKSTEP_* variables of the test process never leak in.
func runBinEnv(t *testing.T, bin string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LOCKSTEP_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// A data directory written by the engine, checked by the binary, damaged,
// and checked again: the exit codes are the contract scripts rely on.
func TestJournalVerifyBinary(t *testing.T) {
	bin := lockstep(t)
	dir := t.TempDir()
	s, err := store.Open(context.Background(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.CreateVolume(context.Background(), store.VolumeSpec{Name: "db", Size: 1 << 20, BlockSize: 4096})
	for i := 0; i < 10; i++ {
		v.WriteAt(context.Background(), make([]byte, 4096), int64(i)*4096, false)
	}
	if _, err := s.Mark(context.Background(), store.MarkSpec{Service: "svc", Class: store.ClassCrash, Volumes: []string{"db"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if out, code := runBin(t, bin, "journal", "verify", dir); code != 0 || !strings.Contains(out, "11 records") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	seg := filepath.Join(dir, "wal", "0000000000000001.wal")
	b, _ := os.ReadFile(seg)
	b[len(b)/2] ^= 0xff
	os.WriteFile(seg, b, 0o640)
	if out, code := runBin(t, bin, "journal", "verify", dir); code != 1 || !strings.Contains(out, "damaged") {
		t.Fatalf("verify damaged: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "journal", "repair", dir); code != 1 || !strings.Contains(out, "refusing") {
		t.Fatalf("repair damaged: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "journal"); code != 0 || !strings.Contains(out, "verify") {
		t.Fatalf("help: exit %d\n%s", code, out)
	}
	if _, code := runBin(t, bin, "journal", "verify"); code != 2 {
		t.Fatalf("missing argument: exit %d, want 2", code)
	}
}

func TestValidateExamplesBinary(t *testing.T) {
	bin := lockstep(t)
	cmd := exec.Command(bin, "validate", "../examples")
	cmd.Env = append(os.Environ(), "PORTAL_DB_CHAP_SECRET=portal-chap-01", "PORTAL_PG_DSN=host=db1 user=lockstep",
		"MAIL_CHAP_SECRET=mail-chap-0001", "MAIL_CHAP_MUTUAL_SECRET=mail-mutual-01", "MAIL_IMAP_PASSWORD=imap-pass", "ERP_MARIADB_PASSWORD=mariadb-pass")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("validate examples: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.lockstep.hcl")
	os.WriteFile(bad, []byte("service \"x\" {\n  volume \"v\" { size = \"ten\" }\n}\n"), 0o600)
	out, code := runBin(t, bin, "validate", bad)
	if code != 1 || !strings.Contains(out, "bad.lockstep.hcl:2:") {
		t.Fatalf("invalid policy: exit %d\n%s", code, out)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// serveBin starts `lockstep serve` on free loopback ports and waits until
// its API answers. stop sends SIGTERM and checks a clean exit.
type served struct {
	cmd    *exec.Cmd
	logs   *syncbuf.Buffer
	portal string
	done   chan error // the exit of cmd
}

func serveBin(t *testing.T, bin, dir string, args ...string) *served {
	t.Helper()
	portal := freePort(t)
	os.Remove(filepath.Join(dir, "api.addr"))
	cmd := exec.Command(bin, append([]string{"serve", "--data", dir, "--iscsi", portal, "--listen", "127.0.0.1:0"}, args...)...)
	logs := &syncbuf.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd, logs: logs, portal: portal, done: make(chan error, 1)}
	exited := make(chan struct{})
	go func() { s.done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(dir, "api.addr")); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("serve exited at start:\n%s", logs.String())
		default:
		}
		if i > 400 {
			t.Fatalf("daemon never came up:\n%s", logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	return s
}

func (s *served) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-s.done; err != nil {
		t.Fatalf("serve did not stop cleanly: %v\n%s", err, s.logs.String())
	}
}

const shopPolicy = `service "shop" {
  volume "db" {
    size = "32MiB"
  }
  volume "wal" {
    size = "8MiB"
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}
`

func writePolicy(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "shop.lockstep.hcl"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustRun(t *testing.T, bin string, want int, args ...string) string {
	t.Helper()
	out, code := runBin(t, bin, args...)
	if code != want {
		t.Fatalf("lockstep %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return out
}

func mustContain(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Fatalf("output lacks %q:\n%s", s, out)
		}
	}
}

// Every daemon command of the CLI against the built binary: serve, plan,
// apply (refused shrink, refused destroy, unmeetable RPO), status,
// services, mark, markers, events, volume list, auth failures, and a
// restart that keeps the state.
func TestDaemonCommandsBinary(t *testing.T) {
	bin := lockstep(t)
	dir := t.TempDir()
	srv := serveBin(t, bin, dir, "--log-format", "json")
	d := "--data=" + dir
	tokenFile := filepath.Join(dir, "api.token")
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}

	mustContain(t, mustRun(t, bin, 0, "status", d), "none applied", "services:     0")
	mustContain(t, mustRun(t, bin, 0, "services", d), "No services")

	pol := writePolicy(t, shopPolicy)
	out := mustRun(t, bin, 0, "plan", pol, d)
	mustContain(t, out, "+ shop/db", "+ shop/wal", "+ shop", "Plan: 2 volume(s) to create")
	var plan struct {
		Volumes []struct{ Action, Volume string }
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "plan", pol, d, "--json")), &plan); err != nil || len(plan.Volumes) != 2 {
		t.Fatalf("plan --json: %v %+v", err, plan)
	}
	mustContain(t, mustRun(t, bin, 0, "apply", pol, d), "Applied: policy version 1")
	mustContain(t, mustRun(t, bin, 0, "plan", pol, d), "No changes")

	var st struct {
		Services int
		Policy   struct{ Version int }
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "status", d, "--json")), &st); err != nil || st.Services != 1 || st.Policy.Version != 1 {
		t.Fatalf("status --json: %v %+v", err, st)
	}
	mustContain(t, mustRun(t, bin, 0, "services", d), "shop", "shop/db,shop/wal", "every 1m", "5m ")
	var svcs []struct{ Name string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "services", d, "--json")), &svcs); err != nil || len(svcs) != 1 || svcs[0].Name != "shop" {
		t.Fatalf("services --json: %v %+v", err, svcs)
	}

	// A service with no apps: the marker protocol records crash with the
	// reason; no freeze window.
	out = mustRun(t, bin, 0, "mark", "shop", d)
	mustContain(t, out, "marker:", "class:         crash", "no app to quiesce", "freeze window: none", "shop/db, shop/wal")
	var m struct {
		ID, Class    string
		FreezeWindow int64 `json:"freeze_window"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "mark", "shop", d, "--json")), &m); err != nil || m.ID == "" || m.Class != "crash" {
		t.Fatalf("mark --json: %v %+v", err, m)
	}
	mustContain(t, mustRun(t, bin, 1, "mark", "nope", d), `no service "nope"`)
	// Only the manual markers count: a scheduled one (every 1m, on minute
	// boundaries) may fall inside the test.
	manual := func(out string) (ids []string, err error) {
		var all []struct{ ID, Trigger string }
		err = json.Unmarshal([]byte(out), &all)
		for _, x := range all {
			if x.Trigger == "manual" {
				ids = append(ids, x.ID)
			}
		}
		return ids, err
	}
	ms, err := manual(mustRun(t, bin, 0, "markers", "shop", "--since", "1h", d, "--json"))
	if err != nil || len(ms) != 2 || ms[1] != m.ID {
		t.Fatalf("markers --json: %v %+v", err, ms)
	}
	mustContain(t, mustRun(t, bin, 0, "markers", "shop", d), m.ID, "manual", "no app to quiesce")
	mustContain(t, mustRun(t, bin, 0, "markers", "shop", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), d), "No markers")
	mustRun(t, bin, 2, "markers", "shop", "--since", "yesterday", d)
	mustRun(t, bin, 2, "markers", d)
	mustContain(t, mustRun(t, bin, 1, "markers", "nope", d), `no service "nope"`)
	mustContain(t, mustRun(t, bin, 0, "events", d), "policy_applied", "marker", m.ID)
	var es []struct{ Type string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "events", d, "--json", "--service", "shop")), &es); err != nil || len(es) < 2 {
		t.Fatalf("events --json: %v %+v", err, es)
	}
	mustContain(t, mustRun(t, bin, 0, "volume", "list", d), "shop/db", "iqn.2026-11.io.lockstep:shop.db")
	var vl struct{ Volumes []struct{ Name string } }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "volume", "list", d, "--json")), &vl); err != nil || len(vl.Volumes) != 2 {
		t.Fatalf("volume list --json: %v %+v", err, vl)
	}

	// Refused shrink, refused destroy, unmeetable RPO: exit 1, nothing changed.
	shrink := writePolicy(t, strings.Replace(shopPolicy, `"32MiB"`, `"16MiB"`, 1))
	mustContain(t, mustRun(t, bin, 1, "plan", shrink, d), "~ shop/db  resize 32.0 MiB -> 16.0 MiB", "Refused:", "shrinking")
	mustContain(t, mustRun(t, bin, 1, "apply", shrink, d), "shrinking", "nothing changed")
	noWAL := writePolicy(t, strings.Replace(shopPolicy, "  volume \"wal\" {\n    size = \"8MiB\"\n  }\n", "", 1))
	mustContain(t, mustRun(t, bin, 1, "plan", noWAL, d), "- shop/wal", "--allow-destroy")
	mustContain(t, mustRun(t, bin, 1, "apply", noWAL, d), `volume "shop/wal" would be destroyed`, "--allow-destroy")
	mustContain(t, mustRun(t, bin, 0, "volume", "list", d), "shop/wal")
	rpo := writePolicy(t, strings.Replace(shopPolicy, `every = "1m"`, `every = "10m"`, 1))
	mustContain(t, mustRun(t, bin, 1, "plan", rpo, d), "RPO shorter than the schedule can meet", "shop.lockstep.hcl:")
	mustContain(t, mustRun(t, bin, 1, "apply", rpo, d), "RPO shorter than the schedule can meet")
	mustContain(t, mustRun(t, bin, 0, "status", d), "version 1 applied")
	mustContain(t, mustRun(t, bin, 0, "apply", noWAL, d, "--allow-destroy"), "- shop/wal", "Applied: policy version 2")
	if out := mustRun(t, bin, 0, "volume", "list", d); strings.Contains(out, "shop/wal") {
		t.Fatalf("destroyed volume still listed:\n%s", out)
	}

	// The daemon's token and address, found three ways; wrong ones fail.
	addr := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.addr")))
	tok := strings.TrimSpace(readFile(t, tokenFile))
	if out, code := runBinEnv(t, bin, []string{"LOCKSTEP_ADDR=" + addr, "LOCKSTEP_TOKEN=" + tok}, "status"); code != 0 {
		t.Fatalf("status with LOCKSTEP_ADDR/TOKEN: exit %d\n%s", code, out)
	}
	if out, code := runBinEnv(t, bin, []string{"LOCKSTEP_DATA=" + dir}, "services"); code != 0 || !strings.Contains(out, "shop") {
		t.Fatalf("services with LOCKSTEP_DATA: exit %d\n%s", code, out)
	}
	if out, code := runBinEnv(t, bin, []string{"LOCKSTEP_TOKEN=wrong"}, "status", "--addr", addr); code != 1 || !strings.Contains(out, "refused the API token") {
		t.Fatalf("wrong token: exit %d\n%s", code, out)
	}
	dead := freePort(t)
	if out, code := runBinEnv(t, bin, []string{"LOCKSTEP_TOKEN=x"}, "status", "--addr", dead); code != 1 || !strings.Contains(out, "not reachable at "+dead) || !strings.Contains(out, "lockstep serve") {
		t.Fatalf("no daemon: exit %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, "status", "--data", t.TempDir()); code != 1 || !strings.Contains(out, "no API token") {
		t.Fatalf("no token: exit %d\n%s", code, out)
	}

	srv.stop(t)
	logs := srv.logs.String()
	if strings.Contains(logs, tok) {
		t.Fatal("the API token is in the daemon's logs")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("--log-format json wrote a non-JSON line: %q", line)
		}
	}

	// A restart serves the applied policy with its markers.
	srv = serveBin(t, bin, dir)
	mustContain(t, mustRun(t, bin, 0, "status", d), "version 2 applied", "services:     1")
	if ms, err := manual(mustRun(t, bin, 0, "markers", "shop", d, "--json")); err != nil || len(ms) != 2 || ms[1] != m.ID {
		t.Fatalf("markers after restart: %v %+v", err, ms)
	}
	if tok2 := strings.TrimSpace(readFile(t, tokenFile)); tok2 != tok {
		t.Fatal("restart changed the token")
	}
	srv.stop(t)
	mustRun(t, bin, 0, "journal", "verify", dir)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lockstep serve with a policy, a real initiator writing, then a point in
// time exposed and removed with the CLI, then a clean stop on SIGTERM.
func TestServeAndExposeBinary(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	bin := lockstep(t)
	dir := t.TempDir()
	pol := writePolicy(t, shopDB32)
	srv := serveBin(t, bin, dir, "--policy", pol)
	iqn := "iqn.2026-11.io.lockstep:shop.db"
	url := "iscsi://" + srv.portal + "/" + iqn + "/0"
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 256k", url).CombinedOutput(); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	var mk struct{ ID string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "mark", "shop", "--data", dir, "--json")), &mk); err != nil || mk.ID == "" {
		t.Fatalf("mark: %v %+v", err, mk)
	}
	time.Sleep(5 * time.Millisecond)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 256k", url).CombinedOutput(); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	// --at takes a marker id too.
	var em struct{ IQN string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "volume", "expose", "shop/db", "--at", mk.ID, "--data", dir, "--json")), &em); err != nil || em.IQN == "" {
		t.Fatalf("expose at marker: %v", err)
	}
	if out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 0 256k", "iscsi://"+srv.portal+"/"+em.IQN+"/0").CombinedOutput(); err != nil || strings.Contains(string(out), "fail") {
		t.Fatalf("read at the marker: %v\n%s", err, out)
	}
	mustRun(t, bin, 0, "volume", "unexpose", em.IQN, "--data", dir)
	mustContain(t, mustRun(t, bin, 2, "volume", "expose", "shop/db", "--at", "soon", "--data", dir), "--at")
	out := mustRun(t, bin, 0, "volume", "expose", "shop/db", "--at", at, "--data", dir, "--json")
	var e struct{ IQN string }
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.IQN == "" {
		t.Fatalf("expose output: %v\n%s", err, out)
	}
	pit := "iscsi://" + srv.portal + "/" + e.IQN + "/0"
	if out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 0 256k", pit).CombinedOutput(); err != nil || strings.Contains(string(out), "fail") {
		t.Fatalf("point-in-time read: %v\n%s", err, out)
	}
	mustContain(t, mustRun(t, bin, 0, "volume", "list", "--data", dir), "shop/db", e.IQN)
	mustRun(t, bin, 0, "volume", "unexpose", e.IQN, "--data", dir)
	mustContain(t, mustRun(t, bin, 1, "volume", "expose", "shop/nope", "--at", at, "--data", dir), "no such volume")
	mustContain(t, mustRun(t, bin, 1, "volume", "unexpose", e.IQN, "--data", dir), "no exposure")
	// The writes went through the counted LUN.
	tok := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.token")))
	addr := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.addr")))
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mustContain(t, string(body), `lockstep_iscsi_bytes_total{op="write",volume="shop/db"} 524288`)
	srv.stop(t)
	mustRun(t, bin, 0, "journal", "verify", dir)
}

// mark through the CLI on a service whose app is quiesced by the built-in
// exec plugin, run as a plugin process of the daemon: an application-
// consistent marker with the plugin's evidence and a freeze window, and a
// crash-consistent one with the reason when the freeze fails; the app is
// thawed either way.
func TestMarkWithAppBinary(t *testing.T) {
	bin := lockstep(t)
	dir, work := t.TempDir(), t.TempDir()
	state := filepath.Join(work, "state")
	pol := func(freeze string) string {
		return `service "hooks" {
  volume "data" {
    size = "8MiB"
  }
  app "exec" "hooks" {
    volumes = ["data"]
    freeze  = ["/bin/sh", "-c", "` + freeze + `"]
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
	}
	srv := serveBin(t, bin, dir)
	d := "--data=" + dir
	mustRun(t, bin, 0, "apply", writePolicy(t, pol(`echo frozen >> `+state+`; echo '{\"lsn\": \"0/42\"}'`)), d)
	var m struct {
		ID, Class, Reason string
		FreezeWindow      int64 `json:"freeze_window"`
		Apps              []struct {
			App           string
			Froze, Thawed bool
			Evidence      json.RawMessage
		}
	}
	out := mustRun(t, bin, 0, "mark", "hooks", d, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Class != "app" || m.FreezeWindow <= 0 || len(m.Apps) != 1 || !m.Apps[0].Froze || !m.Apps[0].Thawed || !strings.Contains(string(m.Apps[0].Evidence), "0/42") {
		t.Fatalf("marker with a quiesced app:\n%s\n%s", out, srv.logs.String())
	}
	if got := readFile(t, state); got != "frozen\nthawed\n" {
		t.Fatalf("app hooks ran as %q", got)
	}
	mustContain(t, mustRun(t, bin, 0, "mark", "hooks", d), "class:         app", "freeze window: ", "0/42")

	// A failing freeze: crash-consistent with the reason, still thawed.
	mustRun(t, bin, 0, "apply", writePolicy(t, pol(`echo nope >&2; exit 3`)), d)
	os.Remove(state)
	out = mustRun(t, bin, 0, "mark", "hooks", d, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Class != "crash" || m.Reason == "" {
		t.Fatalf("marker after a failed freeze:\n%s", out)
	}
	// Thaw is idempotent: the plugin and the protocol may both call it.
	if got := readFile(t, state); !strings.HasPrefix(got, "thawed\n") || strings.Contains(got, "frozen") {
		t.Fatalf("app not thawed after a failed freeze: %q", got)
	}
	srv.stop(t)
}

// `lockstep fold` against the built binary: the daemon started with
// --fold-interval 0 (disabled, and logged), the fold runs on request and
// reports per service in JSON and in text; an unknown service fails.
func TestFoldBinary(t *testing.T) {
	bin := lockstep(t)
	dir := t.TempDir()
	srv := serveBin(t, bin, dir, "--policy", writePolicy(t, shopPolicy), "--fold-interval", "0")
	d := "--data=" + dir
	mustRun(t, bin, 0, "mark", "shop", d)
	var res struct {
		Services []struct {
			Service     string
			Volumes     []string
			WindowStart time.Time `json:"window_start"`
			Skipped     string
			Error       string
		}
		JournalBytes int64 `json:"journal_bytes"`
	}
	out := mustRun(t, bin, 0, "fold", "--json", d)
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Services) != 1 {
		t.Fatalf("fold --json: %v\n%s", err, out)
	}
	s := res.Services[0]
	// shopPolicy keeps the default 72h window, longer than the volumes
	// have existed: the window starts where their history does.
	if s.Service != "shop" || len(s.Volumes) != 2 || s.Skipped != "" || s.Error != "" || res.JournalBytes <= 0 ||
		s.WindowStart.IsZero() || time.Since(s.WindowStart) < 0 || time.Since(s.WindowStart) > time.Minute {
		t.Fatalf("fold --json: %+v\n%s", res, out)
	}
	mustContain(t, mustRun(t, bin, 0, "fold", "shop", d), "service shop:", "window now starts at", "markers expired: 0", "segments removed: 0", "bytes freed:")
	mustContain(t, mustRun(t, bin, 1, "fold", "nope", d), `no service "nope"`)
	srv.stop(t)
	mustContain(t, srv.logs.String(), "retention folds are disabled")
}

// serve --api-tls: the CLI on the same machine finds https:// in api.addr
// and the CA in the data directory; another machine uses LOCKSTEP_CA.
func TestAPITLSBinary(t *testing.T) {
	bin := lockstep(t)
	dir := t.TempDir()
	pol := writePolicy(t, shopDB32)
	srv := serveBin(t, bin, dir, "--api-tls", "--policy", pol)
	addr := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.addr")))
	if !strings.HasPrefix(addr, "https://") {
		t.Fatalf("api.addr %q", addr)
	}
	mustContain(t, mustRun(t, bin, 0, "services", "--data", dir), "shop")
	// Elsewhere: the address, the token and a copy of the CA.
	tok := strings.TrimSpace(readFile(t, filepath.Join(dir, "api.token")))
	cmd := exec.Command(bin, "status", "--addr", addr, "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "LOCKSTEP_TOKEN="+tok, "LOCKSTEP_CA="+filepath.Join(dir, "pki", "ca.crt"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("status with LOCKSTEP_CA: %v\n%s", err, out)
	}
	cmd = exec.Command(bin, "status", "--addr", addr, "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "LOCKSTEP_TOKEN="+tok)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "LOCKSTEP_CA") {
		t.Fatalf("status over https without the CA: %v\n%s", err, out)
	}
	mustContain(t, srv.logs.String(), "api serves https")
	srv.stop(t)
}

// shopDB32 is a service of one 32 MiB volume, marked every minute.
const shopDB32 = `service "shop" {
  volume "db" {
    size = "32MiB"
  }
  consistency {
    every = "1m"
  }
  rpo {
    journal = "5m"
  }
}
`
