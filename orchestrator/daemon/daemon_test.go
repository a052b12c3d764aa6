package daemon

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/policies/model"
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

func startDaemon(t *testing.T, pol *model.Policy) (*Daemon, string) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := New(ctx, Config{DataDir: dir, Policy: pol, ISCSIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		d.Close()
	})
	for i := 0; i < 100; i++ {
		if _, err := Dial(filepath.Join(dir, "control.sock")); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d, dir
}

func shopPolicy() *model.Policy {
	return &model.Policy{Services: []*model.Service{{Name: "shop", Volumes: []*model.Volume{
		{Name: "db", Size: 64 << 20, BlockSize: 512, TargetName: "iqn.2026-11.io.lockstep:shop.db"},
		{Name: "wal", Size: 16 << 20, BlockSize: 4096, TargetName: "iqn.2026-11.io.lockstep:shop.wal"},
	}}}}
}

func TestExposeThroughRealInitiator(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	d, dir := startDaemon(t, shopPolicy())
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

	// Through the control socket, as the CLI does.
	c, err := Dial(filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var ro Exposure
	if err := c.Do(ctx, "POST", "/v0/expose", ExposeRequest{Volume: "shop/db", Marker: m.ID}, &ro); err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIO(t, portal, ro.IQN, "read -P 0xaa 0 1M", "-r"); err != nil {
		t.Fatalf("point-in-time LUN does not hold the marker's data: %v\n%s", err, out)
	}
	if out, err := qemuIO(t, portal, ro.IQN, "write -P 0xcc 0 4k"); err == nil {
		t.Fatalf("write to a read-only point-in-time LUN succeeded:\n%s", out)
	}

	var rw Exposure
	if err := c.Do(ctx, "POST", "/v0/expose", ExposeRequest{Volume: "shop/db", Marker: m.ID, Writable: true}, &rw); err != nil {
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

	// A point outside the journal window is refused with a clear error.
	var bad Exposure
	err = c.Do(ctx, "POST", "/v0/expose", ExposeRequest{Volume: "shop/db", At: "2001-01-01T00:00:00Z"}, &bad)
	if err == nil || !strings.Contains(err.Error(), "outside the journal window") {
		t.Fatalf("expose before the window: %v", err)
	}

	var gone map[string]string
	for _, e := range []Exposure{ro, rw} {
		if err := c.Do(ctx, "POST", "/v0/unexpose", map[string]any{"iqn": e.IQN}, &gone); err != nil {
			t.Fatal(err)
		}
		if out, err := qemuIO(t, portal, e.IQN, "read 0 4k"); err == nil {
			t.Fatalf("unexposed LUN %s still answers:\n%s", e.IQN, out)
		}
	}
	if _, err := d.Store().Volume(rw.Clone); err == nil {
		t.Fatalf("clone %s survived unexpose", rw.Clone)
	}
}

func TestPolicySizeMismatchIsRefused(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d, err := New(ctx, Config{DataDir: dir, Policy: shopPolicy(), ISCSIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	p := shopPolicy()
	p.Services[0].Volumes[0].Size = 128 << 20
	if _, err := New(ctx, Config{DataDir: dir, Policy: p, ISCSIAddr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "resizing is not supported") {
		t.Fatalf("resize: %v", err)
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
