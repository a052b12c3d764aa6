package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/servers"
)

// TestAsNewTwoDatabases presents the two-database service at a scheduled
// marker as new volumes (--as-new) while the writer keeps changing the
// original, attaches the copies through their own targets, and starts a
// second PostgreSQL and a second MariaDB on them. The copy holds the
// marker's cut (every payment with its order, MariaDB at the marker's GTID);
// the original never stops taking writes, loses none, and never sees the
// copy's writes.
func TestAsNewTwoDatabases(t *testing.T) {
	s := newStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w := startShop(t, ctx, s)
	m := w.scheduledMarker(t, s)
	w.waitMore(t, 25) // writes after the marker, which the copy must not hold

	const suffix = "-copy"
	ackedAtAsNew := w.acked.Load()
	started := time.Now()
	out := s.d.mustStdout(t, "restore", service, "--to", m.ID, "--as-new", suffix, "--json")
	t.Logf("as-new at %s (%s) in %s, the writer at %d pairs", m.ID, m.Time.Format(time.RFC3339Nano),
		time.Since(started).Round(time.Millisecond), ackedAtAsNew)
	var res struct {
		Volumes []struct {
			Source, Name, IQN, Portal string
			LUN                       uint64
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("restore --as-new --json: %v\n%s", err, out)
	}
	if len(res.Volumes) != len(volumes) {
		t.Fatalf("as-new made %d volumes, want %d:\n%s", len(res.Volumes), len(volumes), out)
	}

	// Attach and mount every copy next to the original.
	mounts := map[string]string{} // source volume → the copy's mount point
	for _, v := range res.Volumes {
		src, ok := strings.CutPrefix(v.Source, service+"/")
		if !ok || v.Name != v.Source+suffix || !slices.Contains(volumes, src) || v.IQN == iqnPrefix+src {
			t.Fatalf("as-new volume %+v: want a new volume %s%s with a target of its own", v, v.Source, suffix)
		}
		portal := v.Portal
		if portal == "" {
			portal = s.d.portal
		}
		c, err := chain.Start(ctx, chain.Config{Portal: portal, IQN: v.IQN, LUN: v.LUN,
			WorkDir: filepath.Join(s.work, "chain-"+src+suffix), BlockSize: 4096})
		if err != nil {
			t.Fatalf("attach %s (%s): %v", v.Name, v.IQN, err)
		}
		t.Cleanup(func() {
			if err := c.Stop(); err != nil {
				t.Errorf("chain of %s: %v", v.Name, err)
			}
		})
		mp := filepath.Join(s.work, "mnt", src+suffix)
		if err := c.Mount(ctx, mp); err != nil {
			t.Fatalf("mount the copy %s: %v", v.Name, err)
		}
		mounts[src] = mp
	}

	// A second PostgreSQL on the copy. Its postmaster.pid names the running
	// original's postmaster, which on this host is alive: remove it, as an
	// operator starting a copy next to the original must; and its pg_wal
	// links to the original's WAL directory: point it at the copy's.
	pg := &chain.Postgres{
		DataDir: filepath.Join(mounts[volPG], filepath.Base(s.pg.DataDir)),
		WALDir:  filepath.Join(mounts[volLogs], filepath.Base(s.pg.WALDir)),
		SockDir: filepath.Join(s.work, "pgrun-copy"),
		LogFile: filepath.Join(s.work, "postgresql-copy.log"),
		Port:    pgPort(t),
	}
	if err := os.Remove(filepath.Join(pg.DataDir, "postmaster.pid")); err != nil {
		t.Fatalf("the copy's data directory: %v", err)
	}
	if dest, err := os.Readlink(filepath.Join(pg.DataDir, "pg_wal")); err != nil || dest != s.pg.WALDir {
		t.Fatalf("the copy's pg_wal links to %q (%v), want the original's %s", dest, err, s.pg.WALDir)
	}
	if err := pg.LinkWAL(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pg.Stop(context.Background()); err != nil {
			t.Errorf("stop the copy's postgres: %v", err)
		}
	})
	if err := pg.Start(ctx); err != nil {
		t.Fatalf("PostgreSQL on the copy: %v", err)
	}
	// A second MariaDB on the copy's data and log volumes.
	my := servers.StartMariaDBAt(t, servers.MariaDBAtOptions{
		DataDir:   filepath.Join(mounts[volMyData], filepath.Base(s.my.DataDir)),
		LogDir:    filepath.Join(mounts[volLogs], "mariadb"),
		LogDirWas: filepath.Join(s.mounts[volLogs], "mariadb"),
		Existing:  true, User: s.my.User, Password: s.my.Password,
	})
	myDB, err := sql.Open("mysql", my.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { myDB.Close() })
	copyDBs := dbs{pgDSN: pg.DSN(), my: myDB}

	// The copy holds the marker's cut, whatever the original did since.
	orders, payments := checkCut(t, ctx, copyDBs, w.acked.Load())
	if int64(len(orders)) > ackedAtAsNew {
		t.Fatalf("the copy has %d orders, more than the %d acknowledged when it was made", len(orders), ackedAtAsNew)
	}
	var gtid string
	if err := myDB.QueryRowContext(ctx, "SELECT @@global.gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	if want, _ := m.evidence("mariadb")["gtid_binlog_pos"].(string); gtid != want {
		t.Fatalf("the copy's MariaDB is at GTID %q, the marker's evidence says %q", gtid, want)
	}
	takesWrites(t, ctx, copyDBs)

	// The original kept running through all of this and still does.
	w.waitMore(t, 25)
	written := w.stop(t)
	if written <= ackedAtAsNew {
		t.Fatalf("the writer made no progress on the original while the copy was made and used (%d pairs)", written)
	}
	o, p := s.dbs().ids(t, ctx)
	t.Logf("copy: %s / %s; original: %s / %s (writer acknowledged %d)", span(orders), span(payments), span(o), span(p), written)
	if slices.Contains(o, takesWritesID) || slices.Contains(p, takesWritesID) {
		t.Fatal("a write to the copy reached the original")
	}
	if !contiguous(o) || !contiguous(p) || int64(len(p)) < written || len(o) < len(p) {
		t.Fatalf("the original lost writes: orders %s, payments %s, %d acknowledged", span(o), span(p), written)
	}
	// And the original still takes markers.
	s.d.waitMarker(t, service, time.Now(), 30*time.Second, func(m marker) bool { return m.Class == "app" })
	if list := s.d.must(t, "volume", "list"); !strings.Contains(list, volPG+suffix) {
		t.Fatalf("volume list does not show the copy:\n%s", list)
	}
}
