package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockstep-io/lockstep/internal/syncbuf"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// runTTY runs the binary with a pseudo-terminal as stdin, typing answer,
// and checks its exit code.
func runTTY(t *testing.T, bin, answer string, want int, args ...string) string {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		testenv.Unavailable(t, "no pseudo-terminals: %v", err)
	}
	defer m.Close()
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	go func() { // the terminal's echo
		b := make([]byte, 512)
		for {
			if _, err := m.Read(b); err != nil {
				return
			}
		}
	}()
	cmd := exec.Command(bin, args...)
	out := &syncbuf.Buffer{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Write([]byte(answer)); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != want {
		t.Fatalf("lockstep %s (answering %q): exit %d, want %d\n%s", strings.Join(args, " "), answer, code, want, out.String())
	}
	return out.String()
}

// qio runs qemu-io (a real iSCSI initiator) on LUN 0 of iqn.
func qio(t *testing.T, portal, iqn, cmd string) (string, error) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "raw", "-c", cmd, fmt.Sprintf("iscsi://%s/%s/0", portal, iqn)).CombinedOutput()
	s := string(out)
	if err == nil && (strings.Contains(s, "failed") || strings.Contains(s, "error") || strings.Contains(s, "Pattern verification")) {
		err = fmt.Errorf("qemu-io: %s", s)
	}
	return s, err
}

func mustQIO(t *testing.T, portal, iqn, cmd string) {
	t.Helper()
	if out, err := qio(t, portal, iqn, cmd); err != nil {
		t.Fatalf("qemu-io %q on %s: %v\n%s", cmd, iqn, err, out)
	}
}

// takeLog returns the app log's words and empties it.
func takeLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	os.Remove(path)
	return strings.Join(strings.Fields(string(b)), " ")
}

func restorePolicy(log, flag string) string {
	sh := func(s string) string { return `["/bin/sh", "-c", "` + s + `"]` }
	return `service "shop" {
  volume "db" {
    size = "16MiB"
  }
  volume "wal" {
    size = "8MiB"
  }
  app "exec" "web" {
    depends_on = ["db"]
    volumes    = ["db"]
    freeze     = ["/bin/true"]
    thaw       = ["/bin/true"]
    stop       = ` + sh("sleep 1.3; echo stop-web >> "+log) + `
    start      = ` + sh("[ -e "+flag+" ] || exit 7; echo start-web >> "+log) + `
    health     = ` + sh("echo health-web >> "+log) + `
  }
  app "exec" "db" {
    volumes = ["db", "wal"]
    freeze  = ["/bin/sh", "-c", "echo '{\"lsn\": \"0/99\"}'"]
    thaw    = ["/bin/true"]
    stop    = ` + sh("echo stop-db >> "+log) + `
    start   = ` + sh("echo start-db >> "+log) + `
    health  = ` + sh("echo health-db >> "+log) + `
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

// lockstep restore end to end with the built binary: a daemon, a service of
// two volumes written through a real initiator and two exec apps; plan,
// the refusal without --yes off a terminal, in place, the restores list,
// undo, as-new, a single volume with its warning, a failure part-way that
// survives a daemon restart and is resumed, and a restore whose daemon is
// killed, resumed after the restart.
func TestRestoreBinary(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	bin := lockstep(t)
	dir, work := t.TempDir(), t.TempDir()
	logf, flag := filepath.Join(work, "log"), filepath.Join(work, "flag")
	os.WriteFile(flag, nil, 0o600)
	srv := serveBin(t, bin, dir)
	d := "--data=" + dir
	mustRun(t, bin, 0, "apply", writePolicy(t, restorePolicy(logf, flag)), d)
	db, wal := "iqn.2026-11.io.lockstep:shop.db", "iqn.2026-11.io.lockstep:shop.wal"
	if out, err := qio(t, srv.portal, db, "write -P 0xaa 0 1M"); err != nil {
		if strings.Contains(out, "Unknown protocol") {
			testenv.Unavailable(t, "qemu's iscsi driver (qemu-block-extra): %s", out)
		}
		t.Fatalf("write: %v\n%s", err, out)
	}
	mustQIO(t, srv.portal, wal, "write -P 0xa1 0 512k")
	var m struct{ ID, Class string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "mark", "shop", d, "--json")), &m); err != nil || m.Class != "app" {
		t.Fatalf("mark: %v %+v", err, m)
	}
	mustQIO(t, srv.portal, db, "write -P 0xbb 0 1M")
	mustQIO(t, srv.portal, wal, "write -P 0xb1 0 512k")
	takeLog(t, logf)

	// --plan: marker, evidence, distance, bytes, app order, estimate.
	out := mustRun(t, bin, 0, "restore", "shop", "--to", m.ID, "--plan", d)
	mustContain(t, out, "marker "+m.ID, "class app", `"lsn":"0/99"`, "shop/db", "1.0 MiB to roll back", "shop/wal", "512.0 KiB to roll back",
		"stop       web, db", "start      db, web", "estimate")
	out = mustRun(t, bin, 0, "restore", "shop", "--to", time.Now().UTC().Format(time.RFC3339Nano), "--plan", d)
	mustContain(t, out, "marker "+m.ID, "requested", "earlier")
	mustContain(t, mustRun(t, bin, 0, "restore", "shop", "--to", "1ms ago", "--plan", d), "marker "+m.ID)
	mustContain(t, mustRun(t, bin, 1, "restore", "shop", "--to", "2001-01-01T00:00:00Z", "--plan", d), "no application-consistent marker", "--crash-consistent")
	mustContain(t, mustRun(t, bin, 0, "restore", "shop", "--to", "now", "--crash-consistent", "--plan", d), "crash-consistent")
	var plan struct {
		Marker  struct{ ID string }
		Volumes []struct{ Name string }
		Stop    []string
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "restore", "shop", "--to", m.ID, "--plan", "--json", d)), &plan); err != nil || plan.Marker.ID != m.ID || len(plan.Volumes) != 2 {
		t.Fatalf("plan --json: %v %+v", err, plan)
	}
	mustQIO(t, srv.portal, db, "read -P 0xbb 0 1M")

	// No --yes and stdin not a terminal: the plan, then a refusal.
	out = mustRun(t, bin, 2, "restore", "shop", "--to", m.ID, d)
	mustContain(t, out, "marker "+m.ID, "not a terminal", "--yes")
	mustQIO(t, srv.portal, db, "read -P 0xbb 0 1M")
	if got := takeLog(t, logf); got != "" {
		t.Fatalf("plan and refusal touched apps: %q", got)
	}
	// On a terminal: asked; "n" changes nothing.
	out = runTTY(t, bin, "n\n", 1, "restore", "shop", "--to", m.ID, d)
	mustContain(t, out, "marker "+m.ID, `Restore service "shop" in place?`, "[y/N]", "not confirmed; nothing changed")
	mustQIO(t, srv.portal, db, "read -P 0xbb 0 1M")
	mustRun(t, bin, 2, "restore", "shop", d)
	mustRun(t, bin, 2, "restore", "--to", m.ID, d)
	mustRun(t, bin, 2, "restore", "shop", "--to", "m-1", "--crash-consistent", d)
	mustContain(t, mustRun(t, bin, 1, "restore", "nope", "--to", m.ID, "--yes", d), `no service "nope"`)

	// In place: progress for the slow stop, apps in order, data back.
	out = mustRun(t, bin, 0, "restore", "shop", "--to", m.ID, "--yes", d)
	mustContain(t, out, "stop web ...", "stop web: ok after", ": done;", "rolled     shop/db", "1.0 MiB", "healthy    db web", "--undo")
	if got := takeLog(t, logf); got != "stop-web stop-db start-db start-web health-db health-web" {
		t.Fatalf("apps ran as %q", got)
	}
	mustQIO(t, srv.portal, db, "read -P 0xaa 0 1M")
	mustQIO(t, srv.portal, wal, "read -P 0xa1 0 512k")
	var recs []struct{ ID, Kind, State, Undoes string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "restores", "shop", "--json", d)), &recs); err != nil || len(recs) != 1 || recs[0].State != "done" {
		t.Fatalf("restores --json: %v %+v", err, recs)
	}
	first := recs[0].ID
	mustContain(t, mustRun(t, bin, 0, "restores", d), first, "service", "shop", "done")
	mustContain(t, mustRun(t, bin, 0, "restores", first, d), first, "step       roll", "shop/wal")
	mustContain(t, mustRun(t, bin, 0, "events", d, "--service", "shop"), "restore", first)

	// Undo, confirmed on a terminal: the later writes are back.
	mustContain(t, runTTY(t, bin, "y\n", 0, "restore", "shop", "--undo", "--json", d), "Undo restore "+first, "[y/N]", `"kind": "undo"`, `"undoes": "`+first+`"`)
	mustQIO(t, srv.portal, db, "read -P 0xbb 0 1M")
	mustQIO(t, srv.portal, wal, "read -P 0xb1 0 512k")
	mustRun(t, bin, 2, "restore", "shop", "--undo", d)
	takeLog(t, logf)

	// As new: new targets with the marker's data, the original untouched.
	var an struct {
		Volumes []struct{ Source, Name, IQN string }
	}
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "restore", "shop", "--to", m.ID, "--as-new", "-old", "--json", d)), &an); err != nil || len(an.Volumes) != 2 {
		t.Fatalf("as-new --json: %v %+v", err, an)
	}
	if an.Volumes[0].Name != "shop/db-old" || an.Volumes[0].IQN != "iqn.2026-11.io.lockstep:shop.db-old" {
		t.Fatalf("as-new names: %+v", an)
	}
	mustQIO(t, srv.portal, an.Volumes[0].IQN, "read -P 0xaa 0 1M")
	mustQIO(t, srv.portal, an.Volumes[1].IQN, "read -P 0xa1 0 512k")
	mustQIO(t, srv.portal, db, "read -P 0xbb 0 1M")
	mustQIO(t, srv.portal, wal, "read -P 0xb1 0 512k")
	if got := takeLog(t, logf); got != "" {
		t.Fatalf("as-new touched apps: %q", got)
	}
	mustContain(t, mustRun(t, bin, 0, "volume", "list", d), an.Volumes[0].IQN, an.Volumes[1].IQN)
	for _, v := range an.Volumes {
		mustRun(t, bin, 0, "volume", "unexpose", v.IQN, d)
	}
	mustContain(t, mustRun(t, bin, 0, "restore", "shop", "--to", m.ID, "--as-new", "-x", d), "shop/db-x", "iqn.2026-11.io.lockstep:shop.db-x", "unexpose")

	// One volume: a warning, only db rolls, only the apps on db stop.
	out = mustRun(t, bin, 2, "volume", "restore", "shop/db", "--to", m.ID, d)
	mustContain(t, out, "warning", "no longer consistent", "not a terminal")
	out = mustRun(t, bin, 0, "volume", "restore", "shop/db", "--to", m.ID, "--yes", d)
	mustContain(t, out, "warning", `volume "shop/db" is restored alone`, "volume restore", "done")
	mustQIO(t, srv.portal, db, "read -P 0xaa 0 1M")
	mustQIO(t, srv.portal, wal, "read -P 0xb1 0 512k")
	mustRun(t, bin, 2, "volume", "restore", "db", "--to", m.ID, d)
	mustRun(t, bin, 0, "restore", "shop", "--undo", "--yes", d)
	mustQIO(t, srv.portal, db, "read -P 0xbb 0 1M")
	takeLog(t, logf)

	// A failure part-way: web does not start. The CLI says what is rolled
	// and stopped and how to go on; a restarted daemon reports it; resume.
	os.Remove(flag)
	out = mustRun(t, bin, 1, "restore", "shop", "--to", m.ID, "--yes", d)
	mustContain(t, out, "failed", "volumes rolled:     shop/db shop/wal", "volumes not rolled: none", "apps stopped:       web",
		"lockstep restore --resume r-", "lockstep restore shop --undo")
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "restores", "shop", "--json", d)), &recs); err != nil {
		t.Fatal(err)
	}
	failed := recs[len(recs)-1]
	if failed.State != "failed" {
		t.Fatalf("failed restore: %+v", failed)
	}
	mustContain(t, mustRun(t, bin, 0, "restores", "shop", d), "lockstep restore --resume "+failed.ID)
	mustContain(t, mustRun(t, bin, 1, "restore", "shop", "--to", m.ID, "--yes", d), "unfinished", "--resume "+failed.ID)
	srv.stop(t)
	srv = serveBin(t, bin, dir)
	mustContain(t, srv.logs.String(), "unfinished restore", "lockstep restore --resume "+failed.ID)
	mustContain(t, mustRun(t, bin, 0, "events", d), "restore_unfinished")
	os.WriteFile(flag, nil, 0o600)
	takeLog(t, logf)
	mustRun(t, bin, 2, "restore", "other", "--resume", failed.ID, d)
	mustContain(t, mustRun(t, bin, 0, "restore", "--resume", failed.ID, d), failed.ID, ": done;")
	if got := takeLog(t, logf); got != "start-db start-web health-db health-web" {
		t.Fatalf("apps on resume ran as %q", got)
	}
	mustQIO(t, srv.portal, db, "read -P 0xaa 0 1M")
	mustQIO(t, srv.portal, wal, "read -P 0xa1 0 512k")
	mustContain(t, mustRun(t, bin, 1, "restore", "--resume", "r-nope", d), "no restore record")

	// SIGKILL of the daemon while the restore stops web: the restarted
	// daemon reports the restore, resume finishes it.
	mustQIO(t, srv.portal, db, "write -P 0xdd 0 1M")
	cli := exec.Command(bin, "restore", "shop", "--to", m.ID, "--yes", d)
	cliOut := &syncbuf.Buffer{}
	cli.Stdout, cli.Stderr = cliOut, cliOut
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Process.Kill(); cli.Wait() })
	var running string
	for i := 0; running == ""; i++ {
		if i > 200 {
			t.Fatalf("the restore never started:\n%s", cliOut.String())
		}
		time.Sleep(10 * time.Millisecond)
		var rs []struct{ ID, State string }
		if json.Unmarshal([]byte(mustRun(t, bin, 0, "restores", "shop", "--json", d)), &rs) == nil && rs[len(rs)-1].State == "running" {
			running = rs[len(rs)-1].ID
		}
	}
	srv.cmd.Process.Kill()
	<-srv.done
	if err := cli.Wait(); err == nil {
		t.Fatalf("the CLI says the restore ended although its daemon was killed:\n%s", cliOut.String())
	}
	mustContain(t, cliOut.String(), "lockstep restores")
	srv = serveBin(t, bin, dir)
	mustContain(t, srv.logs.String(), "lockstep restore --resume "+running)
	takeLog(t, logf)
	mustContain(t, mustRun(t, bin, 0, "restore", "--resume", running, d), ": done;")
	if got := takeLog(t, logf); got != "stop-web stop-db start-db start-web health-db health-web" {
		t.Fatalf("apps on resume after a kill ran as %q", got)
	}
	mustQIO(t, srv.portal, db, "read -P 0xaa 0 1M")
	srv.stop(t)
	mustRun(t, bin, 0, "journal", "verify", dir)
}
