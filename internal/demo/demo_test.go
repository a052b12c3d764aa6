package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/testenv"
	"github.com/lockstep-io/lockstep/orchestrator/daemon"
)

// TestDemo runs the whole demo: an in-process daemon, its plugins as child
// processes, a real PostgreSQL on the volume through qemu's initiator.
func TestDemo(t *testing.T) {
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, Options{Out: &out, RowsBefore: 500, RowsAfter: 77, VolumeSize: 256 << 20, PostgresPort: 54329})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified {
		t.Fatal("not verified")
	}
	if len(res.Markers) != 2 || len(res.MarkerRows) != 2 || res.MarkerRows[0] != 500 || res.MarkerRows[1] != 577 {
		t.Fatalf("markers %d, rows at the markers %v, want 2 markers at 500 and 577 rows", len(res.Markers), res.MarkerRows)
	}
	if res.RowsBeforeDamage != 577 || res.RestoredRows != 577 || res.RestoredDigest != res.MarkerDigests[1] || res.MarkerDigests[0] == res.MarkerDigests[1] {
		t.Fatalf("restored %d rows (digest %q), before damage %d, marker digests %q", res.RestoredRows, res.RestoredDigest, res.RowsBeforeDamage, res.MarkerDigests)
	}
	for _, m := range res.Markers {
		if m.Class != "app" || m.Trigger != "manual" || m.FreezeWindow <= 0 {
			t.Fatalf("marker %+v: want app-consistent, manual, with a freeze window", m)
		}
		var pg, fs bool
		for _, a := range m.Apps {
			switch a.App {
			case AppDB:
				pg = a.Froze && a.Thawed && strings.Contains(string(a.Evidence), `"lsn"`)
			case AppFS:
				fs = a.Froze && a.Thawed
			}
		}
		if !pg || !fs {
			t.Fatalf("marker %s apps %+v: want both frozen and thawed, the LSN as PostgreSQL's evidence", m.ID, m.Apps)
		}
	}
	if p := res.Plan; p == nil || p.Marker == nil || p.Marker.ID != res.Markers[1].ID || strings.Join(p.Stop, ",") != "db,fs,initiator" || strings.Join(p.Start, ",") != "initiator,fs,db" {
		t.Fatalf("plan %+v: want marker 2, stop db, fs, initiator, start in reverse", p)
	}
	rec := res.Record
	if rec == nil || rec.State != "done" || len(rec.Healthy) != 3 || len(rec.Warnings) != 0 || res.BytesRolledBack <= 0 {
		t.Fatalf("restore record %+v, %d bytes rolled back", rec, res.BytesRolledBack)
	}
	if !res.RPOMet || res.RPOTarget != 5*time.Minute || res.JournalSegments == 0 || res.JournalBytes == 0 {
		t.Fatalf("result %+v", res)
	}
	if res.Reconnects != 0 {
		t.Fatalf("%d iSCSI reconnects", res.Reconnects)
	}
	for _, want := range []string{"Summary", "WAL LSN", "RPO", "journal", "cleaned up"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s left behind: %v", res.Dir, err)
	}
	if res.Total > 2*time.Minute {
		t.Errorf("the demo took %s; it must stay well under five minutes", res.Total)
	}
}

// TestPolicy checks the demo policy as the daemon reads it, with paths
// that need quoting.
func TestPolicy(t *testing.T) {
	const mnt = `/tmp/a "b"/${x}/mnt`
	text, err := renderPolicy(policyPaths{Size: 1 << 30, ChainDir: "/tmp/chain", MountPoint: mnt, StateDir: "/tmp/s", SockDir: "/tmp/run", Port: 5432,
		DataDir: "/tmp/mnt/pgdata", LogFile: "/tmp/pg.log"})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := checkPolicy(text)
	if err != nil {
		t.Fatal(err)
	}
	svc := pol.Service(Service)
	if svc == nil || len(svc.Volumes) != 1 || svc.Volumes[0].Name != VolumeName || len(svc.Apps) != 3 {
		t.Fatalf("policy %+v", pol)
	}
	for _, a := range svc.Apps {
		if a.Name == AppFS && fmt.Sprint(a.Config["mountpoints"]) != fmt.Sprint([]string{mnt}) {
			t.Fatalf("mountpoints %#v, want %q", a.Config["mountpoints"], mnt)
		}
		if a.Name == AppDB && fmt.Sprint(a.DependsOn) != "[fs]" {
			t.Fatalf("db depends on %v, want the file system", a.DependsOn)
		}
		if a.Name == AppFS && fmt.Sprint(a.DependsOn) != "[initiator]" {
			t.Fatalf("fs depends on %v, want the initiator", a.DependsOn)
		}
		if a.Name == AppInitiator && fmt.Sprint(a.Config["start"]) != fmt.Sprint(chain.DropExportCacheCommand("/tmp/chain")) {
			t.Fatalf("initiator starts with %v, want %v", a.Config["start"], chain.DropExportCacheCommand("/tmp/chain"))
		}
	}
	if daemon.VolumeName(Service, VolumeName) != StoreVolume {
		t.Fatalf("store name %q, the daemon names it %q", StoreVolume, daemon.VolumeName(Service, VolumeName))
	}
	if !strings.Contains(text, `"1GiB"`) || !strings.Contains(text, `$${x}`) {
		t.Fatalf("policy:\n%s", text)
	}
}
