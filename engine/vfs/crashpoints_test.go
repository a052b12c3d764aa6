package vfs_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
	"github.com/lockstep-io/lockstep/engine/vfs/vfstest"
)

const walRecords = 5

func walRecord(i int) string { return fmt.Sprintf("rec%d;", i) }

// walWorkload appends synced records to a log and then publishes a manifest
// with WriteFileAtomic; its check asserts what was acknowledged survived.
// exact says only what was synced may survive; torn allows a torn log tail.
func walWorkload(exact, torn bool) vfstest.Workload {
	return func(t *testing.T, fsys vfs.FS) func(*testing.T, vfs.FS) {
		var (
			logDurable  bool // the log's directory entry is durable
			acked       strings.Builder
			manifestSet bool
		)
		check := func(t *testing.T, s vfs.FS) {
			all := ""
			for i := range walRecords {
				all += walRecord(i)
			}
			got := content(t, s, "/wal/log")
			switch {
			case got == "<missing>":
				if logDurable {
					t.Fatal("the log vanished after its directory was synced")
				}
			case !strings.HasPrefix(got, acked.String()):
				t.Fatalf("log %q lost acknowledged records %q", got, acked.String())
			case exact && got != acked.String():
				t.Fatalf("log %q holds more than was synced, %q", got, acked.String())
			case !torn && !strings.HasPrefix(all, got):
				t.Fatalf("log %q is not a prefix of what was written", got)
			}
			m := content(t, s, "/wal/manifest")
			if manifestSet && m != "upto=5" || m != "<missing>" && m != "upto=5" {
				t.Fatalf("manifest %q (acknowledged: %v)", m, manifestSet)
			}
		}
		stop := func(err error) func(*testing.T, vfs.FS) {
			if !errors.Is(err, vfs.ErrCrashed) {
				t.Errorf("workload: %v", err)
			}
			return check
		}
		if err := fsys.MkdirAll("/wal", 0o755); err != nil {
			return stop(err)
		}
		if err := fsys.SyncDir("/"); err != nil {
			return stop(err)
		}
		f, err := fsys.OpenFile("/wal/log", os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return stop(err)
		}
		defer f.Close()
		if err := fsys.SyncDir("/wal"); err != nil {
			return stop(err)
		}
		logDurable = true
		off := int64(0)
		for i := range walRecords {
			rec := walRecord(i)
			if _, err := f.WriteAt([]byte(rec), off); err != nil {
				return stop(err)
			}
			off += int64(len(rec))
			if err := f.Sync(); err != nil {
				return stop(err)
			}
			acked.WriteString(rec)
		}
		if err := vfs.WriteFileAtomic(fsys, "/wal/manifest", []byte(fmt.Sprintf("upto=%d", walRecords)), 0o644); err != nil {
			return stop(err)
		}
		manifestSet = true
		return check
	}
}

func TestEachCrashPointStrict(t *testing.T) {
	vfstest.EachCrashPoint(t, vfs.CrashOptions{}, walWorkload(true, false))
}

func TestEachCrashPointRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 5 {
		vfstest.EachCrashPoint(t, vfs.CrashOptions{KeepUnsyncedProb: 0.5, Rand: r}, walWorkload(false, false))
		vfstest.EachCrashPoint(t, vfs.CrashOptions{KeepUnsyncedProb: 0.5, TornTail: true, Rand: r}, walWorkload(false, true))
	}
}
