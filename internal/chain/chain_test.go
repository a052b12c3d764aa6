package chain

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// serveVolume creates a journaled volume and serves it as LUN 0 of iqn on a
// loopback port.
func serveVolume(t *testing.T, size int64, iqn string) (*store.Store, *store.Volume, string) {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v, err := s.CreateVolume(ctx, store.VolumeSpec{Name: "data", Size: size, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := iscsi.NewServer(iscsi.ServerConfig{Portal: l.Addr().String()})
	if err := srv.AddTarget(iscsi.TargetConfig{IQN: iqn, LUNs: []iscsi.LUNConfig{{ID: 0, Device: v}}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, v, l.Addr().String()
}

func requireChain(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
}

// TestChainExt4 puts a real ext4 through the chain and finds its superblock
// and a file's bytes in the journaled volume.
func TestChainExt4(t *testing.T) {
	requireChain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const iqn = "iqn.2026-11.io.lockstep:chain-test"
	_, vol, portal := serveVolume(t, 128<<20, iqn)

	work := t.TempDir()
	c, err := Start(ctx, Config{Portal: portal, IQN: iqn, WorkDir: filepath.Join(work, "chain")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if !strings.HasPrefix(c.Device(), "/dev/loop") {
		t.Fatalf("device %q", c.Device())
	}
	if err := c.Mkfs(ctx); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(work, "mnt")
	if err := c.Mount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	// Random content, so finding its blocks in the volume cannot be luck.
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	if err := os.WriteFile(filepath.Join(mnt, "payload"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Unmount(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if isMounted(mnt) || isMounted(c.ExportFile()) {
		t.Fatal("a mount survived Stop")
	}
	if n := c.Reconnects(); n != 0 {
		t.Fatalf("%d iSCSI reconnects; qemu log:\n%s", n, c.Log())
	}

	sb := make([]byte, 4096)
	if err := vol.ReadAt(ctx, sb, 0); err != nil {
		t.Fatal(err)
	}
	if magic := binary.LittleEndian.Uint16(sb[1024+56:]); magic != 0xEF53 {
		t.Fatalf("ext4 magic %#x in the volume, want 0xef53", magic)
	}
	first := payload[:4096]
	found := false
	buf := make([]byte, 1<<20)
	for off := int64(0); off < vol.Size() && !found; off += int64(len(buf)) {
		if err := vol.ReadAt(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(buf); i += 4096 {
			if bytes.Equal(buf[i:i+4096], first) {
				whole := make([]byte, len(payload))
				if err := vol.ReadAt(ctx, whole, off+int64(i)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(whole, payload) {
					t.Fatal("file's first block found in the volume but the rest differs")
				}
				found = true
				break
			}
		}
	}
	if !found {
		t.Fatal("the file's bytes did not reach the journaled volume")
	}
}

// TestStopPartial checks that Stop cleans up after a Start that could not
// reach the target.
func TestStopPartial(t *testing.T) {
	requireChain(t)
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	dir := filepath.Join(t.TempDir(), "chain")
	c, err := Start(ctx, Config{Portal: addr, IQN: "iqn.2026-11.io.lockstep:nobody", WorkDir: dir, ReadyTimeout: 20 * time.Second})
	if err == nil {
		c.Stop()
		t.Fatal("chain started without a target")
	}
	if isMounted(filepath.Join(dir, "lun.raw")) {
		t.Fatal("FUSE export left mounted after a failed start")
	}
	if _, err := os.Stat(filepath.Join(dir, "lun.raw")); !os.IsNotExist(err) {
		t.Fatalf("export file left behind: %v", err)
	}
}

// TestPostgres runs a throwaway cluster on a chain-backed ext4.
func TestPostgres(t *testing.T) {
	requireChain(t)
	if err := PostgresAvailable(); err != nil {
		testenv.Unavailable(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const iqn = "iqn.2026-11.io.lockstep:chain-pg"
	_, _, portal := serveVolume(t, 256<<20, iqn)
	work := searchableTempDir(t)
	c, err := Start(ctx, Config{Portal: portal, IQN: iqn, WorkDir: filepath.Join(work, "chain")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	if err := c.Mkfs(ctx); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(work, "mnt")
	if err := c.Mount(ctx, mnt); err != nil {
		t.Fatal(err)
	}
	pg := &Postgres{DataDir: filepath.Join(mnt, "pgdata"), SockDir: filepath.Join(work, "sock"), LogFile: filepath.Join(work, "pg.log"), Port: 54329}
	if err := pg.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop(context.Background()) })
	if _, err := pg.SQL(ctx, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	lsn, err := pg.CurrentWALLSN(ctx)
	if err != nil || !strings.Contains(lsn, "/") {
		t.Fatalf("lsn %q: %v", lsn, err)
	}
	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if pg.Running() {
		t.Fatal("postgres still running after Stop")
	}
	// A clean restart sees the committed rows.
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := pg.SQL(ctx, "SELECT count(*), sum(id) FROM t")
	if err != nil {
		t.Fatal(err)
	}
	if got != "1000|500500" {
		t.Fatalf("after restart: %q, want 1000|500500", got)
	}
	if _, err := pg.SQL(ctx, "SELECT * FROM missing_table"); err == nil {
		t.Fatal("psql error not reported")
	}
}

// searchableTempDir is a temporary directory the postgres user can reach
// (t.TempDir's parents are private to root).
func searchableTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "lockstep-chain-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
