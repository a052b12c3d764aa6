package daemon

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// qemuIO runs qemu-io (libiscsi inside QEMU: a real initiator) on a LUN.
func qemuIO(t *testing.T, portal, iqn, cmd string, flags ...string) (string, error) {
	t.Helper()
	url := fmt.Sprintf("iscsi://%s/%s/0", portal, iqn)
	args := append(append([]string{"-f", "raw"}, flags...), "-c", cmd, url)
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	s := string(out)
	if err == nil && (strings.Contains(s, "failed") || strings.Contains(s, "error")) {
		err = fmt.Errorf("qemu-io: %s", s)
	}
	return s, err
}

// testDaemon is a daemon serving in-process on loopback ports.
type testDaemon struct {
	*Daemon
	dir  string
	c    *api.Client
	stop func()
}

// startDaemon opens dir (a new one when empty) with the policy srcs (nil:
// the applied one) and serves it until the test ends or stop is called.
func startDaemon(t *testing.T, dir string, srcs []api.Source, opts ...func(*Config)) *testDaemon {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := Config{DataDir: dir, Policy: srcs, ISCSIAddr: "127.0.0.1:0", Listen: "127.0.0.1:0"}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	t.Cleanup(stop)
	return &testDaemon{Daemon: d, dir: dir, c: api.New(d.Addr(), d.Token()), stop: stop}
}

// policy returns one policy file as the CLI sends it.
func policy(text string) []api.Source {
	return []api.Source{{Filename: "/policies/test.lockstep.hcl", Text: text}}
}

const shopHCL = `service "shop" {
  volume "db" {
    size        = "64MiB"
    block_size  = 512
    target_name = "iqn.2026-11.io.lockstep:shop.db"
  }
  volume "wal" {
    size        = "16MiB"
    target_name = "iqn.2026-11.io.lockstep:shop.wal"
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "2h"
  }
}
`

func TestExposeThroughRealInitiator(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	d := startDaemon(t, "", policy(shopHCL))
	ctx := context.Background()
	portal := d.Portal()
	const db = "iqn.2026-11.io.lockstep:shop.db"
	if out, err := qemuIO(t, portal, db, "write -P 0xaa 0 1M"); err != nil {
		if strings.Contains(out, "Unknown protocol") || strings.Contains(out, "iscsi") && strings.Contains(out, "not") {
			testenv.Unavailable(t, "qemu's iscsi driver (qemu-block-extra): %s", out)
		}
		t.Fatalf("write through iSCSI: %v\n%s", err, out)
	}
	m, err := d.Store().Mark(ctx, store.MarkSpec{Service: "shop", Class: store.ClassCrash, Volumes: []string{"shop/db", "shop/wal"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIO(t, portal, db, "write -P 0xbb 0 1M"); err != nil {
		t.Fatalf("second write: %v\n%s", err, out)
	}

	// Through the API, as the CLI does.
	ro, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/db", Marker: m.ID})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIO(t, portal, ro.IQN, "read -P 0xaa 0 1M", "-r"); err != nil {
		t.Fatalf("point-in-time LUN does not hold the marker's data: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, portal, ro.IQN, "write -P 0xcc 0 4k"); err == nil {
		t.Fatalf("write to a read-only point-in-time LUN succeeded:\n%s", out)
	}
	rw, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/db", Marker: m.ID, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIO(t, portal, rw.IQN, "write -P 0xcc 0 64k"); err != nil {
		t.Fatalf("write to clone: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, portal, rw.IQN, "read -P 0xcc 0 64k"); err != nil {
		t.Fatalf("clone lost its write: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, portal, rw.IQN, "read -P 0xaa 64k 960k"); err != nil {
		t.Fatalf("clone does not hold the marker's data beyond its own write: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, portal, db, "read -P 0xbb 0 1M"); err != nil {
		t.Fatalf("the clone's write reached the original: %v\n%s", err, out)
	}
	_, err = d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/db", At: "2001-01-01T00:00:00Z"})
	if err == nil || !strings.Contains(err.Error(), "outside the journal window") {
		t.Fatalf("expose before the window: %v", err)
	}
	for _, e := range []api.Exposure{ro, rw} {
		if err := d.c.Unexpose(ctx, api.UnexposeRequest{IQN: e.IQN}); err != nil {
			t.Fatal(err)
		}
		if out, err := qemuIO(t, portal, e.IQN, "read 0 4k"); err == nil {
			t.Fatalf("unexposed LUN %s still answers:\n%s", e.IQN, out)
		}
	}
	if _, err := d.Store().Volume(rw.Clone); err == nil {
		t.Fatalf("clone %s survived unexpose", rw.Clone)
	}
	// The iSCSI traffic is counted per volume.
	body := scrape(t, d)
	if !strings.Contains(body, `lockstep_iscsi_bytes_total{op="write",volume="shop/db"}`) {
		t.Fatalf("no iSCSI write counter for shop/db in /metrics")
	}
}

func TestParsePoint(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"-15m":                 now.Add(-15 * time.Minute),
		"2026-11-23T11:00:00Z": time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC),
		"1795000000000000000":  time.Unix(0, 1795000000000000000),
	} {
		got, err := ParsePoint(now, in)
		if err != nil || !got.Equal(want) {
			t.Fatalf("ParsePoint(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParsePoint(now, "yesterday-ish"); err == nil {
		t.Fatal("nonsense accepted")
	}
}

func TestDefaultIQN(t *testing.T) {
	if got := DefaultIQN("Shop/DB_1"); got != IQNPrefix+"shop.db-1" {
		t.Fatalf("DefaultIQN = %q", got)
	}
	if filepath.Base(PolicyFile) != PolicyFile {
		t.Fatal("policy file must live in the data directory itself")
	}
}

// A target listening on a wildcard address never advertises the wildcard:
// exposures print a portal an initiator can reach, or the configured one.
func TestAdvertisedPortal(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL), func(c *Config) { c.ISCSIAddr = "0.0.0.0:0" })
	host, port, err := net.SplitHostPort(d.Portal())
	if err != nil || port == "0" || net.ParseIP(host) == nil || net.ParseIP(host).IsUnspecified() {
		t.Fatalf("portal %q on a wildcard listener (%v)", d.Portal(), err)
	}
	d2 := startDaemon(t, "", policy(shopHCL), func(c *Config) { c.ISCSIAdvertise = "storage.example.com:3260" })
	e, err := d2.c.Expose(context.Background(), api.ExposeRequest{Volume: "shop/db", At: "-0s"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Portal != "storage.example.com:3260" {
		t.Fatalf("exposure portal %q, want the advertised one", e.Portal)
	}
}
