package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/chain"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

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
	res, err := Run(ctx, Options{Out: &out, RowsBefore: 500, RowsAfter: 77})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified {
		t.Fatal("not verified")
	}
	if res.MarkerRows != 500 || res.RestoredRows != 500 || res.RowsBeforeDamage != 577 {
		t.Fatalf("rows: marker %d restored %d before damage %d, want 500 500 577", res.MarkerRows, res.RestoredRows, res.RowsBeforeDamage)
	}
	if res.RestoredDigest != res.MarkerDigest || res.MarkerDigest == "" {
		t.Fatalf("digest %q, marker %q", res.RestoredDigest, res.MarkerDigest)
	}
	var ev Evidence
	if err := json.Unmarshal(res.Marker.Evidence, &ev); err != nil {
		t.Fatalf("evidence %q: %v", res.Marker.Evidence, err)
	}
	if ev.Rows != 500 || !strings.Contains(ev.PostgresLSN, "/") {
		t.Fatalf("evidence %+v", ev)
	}
	if res.Marker.Class != "app" || res.BytesRolledBack <= 0 || !res.RPOMet || res.Segments == 0 || res.JournalBytes == 0 {
		t.Fatalf("result %+v", res)
	}
	if res.Reconnects != 0 {
		t.Fatalf("%d iSCSI reconnects", res.Reconnects)
	}
	for _, want := range []string{"Lockstep demo report", "postgres_lsn", "RPO", "journal"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s left behind: %v", res.Dir, err)
	}
}

// TestThawAfterFailedMark checks that the file system is frozen while the
// marker is taken and thawed when taking it fails.
func TestThawAfterFailedMark(t *testing.T) {
	if err := chain.Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	if err := chain.PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "lockstep-thaw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)

	s, err := store.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v, err := s.CreateVolume(ctx, store.VolumeSpec{Name: "v", Size: 256 << 20, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := iscsi.NewServer(iscsi.ServerConfig{Portal: l.Addr().String()})
	if err := srv.AddTarget(iscsi.TargetConfig{IQN: IQN, LUNs: []iscsi.LUNConfig{{ID: 0, Device: v}}}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l)
	t.Cleanup(func() { srv.Close() })
	c, err := chain.Start(ctx, chain.Config{Portal: l.Addr().String(), IQN: IQN, WorkDir: filepath.Join(dir, "chain")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	mnt := filepath.Join(dir, "mnt")
	if err := c.Mkfs(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Mount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	pg := &chain.Postgres{DataDir: filepath.Join(mnt, "pgdata"), SockDir: filepath.Join(dir, "run"), LogFile: filepath.Join(dir, "pg.log"), Port: 54327}
	if err := pg.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop(context.Background()) })

	// writeDone writes a file in the mount and reports when the write
	// returned; it blocks while the file system is frozen.
	writeDone := func(name string) chan error {
		ch := make(chan error, 1)
		go func() { ch <- os.WriteFile(filepath.Join(mnt, name), []byte("x"), 0o644) }()
		return ch
	}
	var blocked bool
	injected := errors.New("injected marker failure")
	_, _, err = quiesceAndMark(ctx, pg, c, 1, func(context.Context, []byte) (*store.Marker, error) {
		select {
		case <-writeDone("during-freeze"):
		case <-time.After(500 * time.Millisecond):
			blocked = true
		}
		return nil, injected
	})
	if !errors.Is(err, injected) {
		t.Fatalf("error %v, want the injected one", err)
	}
	if !blocked {
		t.Error("a write went through while the marker was taken: the file system was not frozen")
	}
	select {
	case err := <-writeDone("after-failure"):
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		c.Thaw(context.Background())
		t.Fatal("file system still frozen after a failed marker")
	}
	if _, err := pg.SQL(ctx, "CREATE TABLE after_failed_mark (id int)"); err != nil {
		t.Fatal(err)
	}
}
