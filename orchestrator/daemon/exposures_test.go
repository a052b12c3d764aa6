package daemon

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/orchestrator/api"
)

const aclInitiator = "iqn.2026-11.io.lockstep:allowed-host"

const aclHCL = `service "shop" {
  volume "db" {
    size        = "16MiB"
    target_name = "iqn.2026-11.io.lockstep:shop.db"
    initiators  = ["` + aclInitiator + `"]
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "2h"
  }
}
`

// qemuIOAs is qemuIO logging in as initiator.
func qemuIOAs(t *testing.T, portal, iqn, initiator, cmd string, flags ...string) (string, error) {
	t.Helper()
	host, port, _ := strings.Cut(portal, ":")
	opts := fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=%s:%s,file.target=%s,file.lun=0,file.initiator-name=%s", host, port, iqn, initiator)
	args := append(append([]string{"--image-opts"}, flags...), "-c", cmd, opts)
	out, err := exec.Command("qemu-io", args...).CombinedOutput()
	s := string(out)
	if err == nil && (strings.Contains(s, "failed") || strings.Contains(s, "error")) {
		err = fmt.Errorf("qemu-io: %s", s)
	}
	return s, err
}

// TestExposuresSurviveRestart: a read-only exposure, a writable clone with
// its writes, and a clone no record names (a crash right after making it)
// are all served again after a restart, under the same names and with the
// source volume's initiator list; an unexposed clone stays gone.
func TestExposuresSurviveRestart(t *testing.T) {
	testenv.LookPath(t, "qemu-io")
	dir := t.TempDir()
	d := startDaemon(t, dir, policy(aclHCL))
	ctx := context.Background()
	const db = "iqn.2026-11.io.lockstep:shop.db"
	if out, err := qemuIOAs(t, d.Portal(), db, aclInitiator, "write -P 0xaa 0 1M"); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	m, err := d.Store().Mark(ctx, store.MarkSpec{Service: "shop", Class: store.ClassCrash, Volumes: []string{"shop/db"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIOAs(t, d.Portal(), db, aclInitiator, "write -P 0xbb 0 1M"); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	ro, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/db", Marker: m.ID})
	if err != nil {
		t.Fatal(err)
	}
	rw, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/db", Marker: m.ID, Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := qemuIOAs(t, d.Portal(), rw.IQN, aclInitiator, "write -P 0xcc 0 64k"); err != nil {
		t.Fatalf("write to the clone: %v\n%s", err, out)
	}
	gone, err := d.c.Expose(ctx, api.ExposeRequest{Volume: "shop/db", At: fmt.Sprint(m.TS + 1), Writable: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.c.Unexpose(ctx, api.UnexposeRequest{IQN: gone.IQN}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Store().Clone(ctx, "shop/db", m.TS, "shop/db.orphan"); err != nil {
		t.Fatal(err)
	}
	d.stop()

	d2 := startDaemon(t, dir, nil)
	have := map[string]api.Exposure{}
	for _, e := range d2.Exposures() {
		have[e.IQN] = e
	}
	orphan := DefaultIQN("shop/db.orphan")
	if len(have) != 3 || have[ro.IQN].IQN == "" || have[rw.IQN].Clone != rw.Clone || have[orphan].Clone != "shop/db.orphan" {
		t.Fatalf("after the restart: exposures %v; want %s, %s (clone %s) and %s", have, ro.IQN, rw.IQN, rw.Clone, orphan)
	}
	p := d2.Portal()
	for _, c := range []struct{ iqn, cmd, what string }{
		{ro.IQN, "read -P 0xaa 0 1M", "the read-only exposure"},
		{rw.IQN, "read -P 0xcc 0 64k", "the clone's own write"},
		{rw.IQN, "read -P 0xaa 64k 960k", "the clone's data from the marker"},
		{orphan, "read -P 0xaa 0 1M", "the clone without a record"},
	} {
		if out, err := qemuIOAs(t, p, c.iqn, aclInitiator, c.cmd, "-r"); err != nil {
			t.Fatalf("%s after the restart: %v\n%s", c.what, err, out)
		}
	}
	// The source's initiator list still guards the data.
	if out, err := qemuIOAs(t, p, ro.IQN, "iqn.2026-11.io.lockstep:someone-else", "read 0 4k", "-r"); err == nil {
		t.Fatalf("an initiator not on the source volume's list read its exposure:\n%s", out)
	}
	if _, err := d2.Store().Volume(gone.Clone); err == nil {
		t.Fatalf("the unexposed clone %s came back", gone.Clone)
	}
	if err := d2.c.Unexpose(ctx, api.UnexposeRequest{IQN: orphan}); err != nil {
		t.Fatal(err)
	}
	d2.stop()
	d3 := startDaemon(t, dir, nil)
	if n := len(d3.Exposures()); n != 2 {
		t.Fatalf("after unexposing the orphan and another restart: %d exposures, want 2: %v", n, d3.Exposures())
	}
}
