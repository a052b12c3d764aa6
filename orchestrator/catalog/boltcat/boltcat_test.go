package boltcat

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/catalog"
	"github.com/lockstep-io/lockstep/orchestrator/catalog/catalogtest"
)

func open(t *testing.T, dir string, maxEvents int, maxAge time.Duration) catalog.Catalog {
	c, err := Open(filepath.Join(dir, "catalog.db"), Options{MaxEvents: maxEvents, MaxEventAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) { catalogtest.Run(t, open) }

func TestFileMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("catalog file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	p := filepath.Join(t.TempDir(), "catalog.db")
	c, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := Open(p, Options{LockTimeout: 100 * time.Millisecond}); err == nil {
		t.Fatal("a second Open of a held catalog succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("second Open hung")
	}
}

// TestCrash kills a writer process with SIGKILL while it records markers and
// events, and checks that every write it reported as returned survives.
func TestCrash(t *testing.T) {
	if p := os.Getenv("BOLTCAT_CRASH_CHILD"); p != "" {
		crashChild(p)
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	for round := 0; round < 3; round++ {
		p := filepath.Join(t.TempDir(), "catalog.db")
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.v=false")
		cmd.Env = append(os.Environ(), "BOLTCAT_CRASH_CHILD="+p)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]bool{}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			acked[sc.Text()] = true
			if len(acked) == 50+round*40 {
				cmd.Process.Kill()
				break
			}
		}
		cmd.Wait()
		if len(acked) < 50 {
			t.Fatalf("child acknowledged only %d writes", len(acked))
		}
		c, err := Open(p, Options{})
		if err != nil {
			t.Fatalf("reopen after SIGKILL: %v", err)
		}
		ctx := context.Background()
		for id := range acked {
			if _, err := c.Marker(ctx, id); err != nil {
				t.Errorf("acknowledged marker %s lost: %v", id, err)
			}
		}
		es, err := c.Events(ctx, catalog.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) < len(acked) {
			t.Errorf("%d events after crash, want at least %d", len(es), len(acked))
		}
		c.Close()
	}
}

func crashChild(p string) {
	c, err := Open(p, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	t0 := time.Now()
	for i := 0; ; i++ {
		id := fmt.Sprintf("m-%d", i)
		m := catalog.Marker{ID: id, Service: "svc", Time: t0.Add(time.Duration(i) * time.Millisecond), Seq: uint64(i),
			Class: catalog.ClassApp, State: catalog.StatePresent}
		if err := c.PutMarker(ctx, m); err != nil {
			os.Exit(3)
		}
		if _, err := c.AddEvent(ctx, catalog.Event{Type: catalog.EventMarker, Message: id}); err != nil {
			os.Exit(3)
		}
		fmt.Println(id)
	}
}
