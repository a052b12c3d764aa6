package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/engine/store"
)

func makeStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(context.Background(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVolume(context.Background(), store.VolumeSpec{Name: "db", Size: 1 << 20, BlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		buf := make([]byte, 4096)
		buf[0] = byte(i)
		if err := v.WriteAt(context.Background(), buf, int64(i)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestJournalVerifyAndRepair(t *testing.T) {
	dir := makeStore(t)
	out, _, code := run(t, "journal", "verify", "--json=false", dir)
	if code != 0 || !strings.Contains(out, "20 records") || !strings.Contains(out, "ok: no damage") {
		t.Fatalf("verify intact: code %d\n%s", code, out)
	}
	seg := filepath.Join(dir, "wal", "0000000000000001.wal")

	// A torn tail past the synced mark: append half a record's worth of junk.
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0x30, 0x10, 0, 0, 1, 2, 3, 4, 5, 6, 7})
	f.Close()
	out, _, code = run(t, "journal", "verify", "--json", dir)
	var rep struct {
		OK, Repairable bool
		Damage         []struct{ TornTail bool }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitFailure || rep.OK || !rep.Repairable || len(rep.Damage) != 1 {
		t.Fatalf("verify torn: code %d err %v\n%s", code, err, out)
	}
	out, _, code = run(t, "journal", "repair", "--json=false", dir)
	if code != 0 || !strings.Contains(out, "repaired") {
		t.Fatalf("repair torn: code %d\n%s", code, out)
	}
	if tails, _ := filepath.Glob(filepath.Join(dir, "wal", "torn", "*")); len(tails) != 1 {
		t.Fatalf("no copy of the torn tail kept: %v", tails)
	}
	if _, _, code = run(t, "journal", "verify", "--json=false", dir); code != 0 {
		t.Fatalf("verify after repair: code %d", code)
	}

	// A bit flip in an acknowledged record: reported, refused, untouched.
	b, _ := os.ReadFile(seg)
	b[200] ^= 0x01
	os.WriteFile(seg, b, 0o640)
	out, _, code = run(t, "journal", "verify", "--json=false", dir)
	if code != exitFailure || !strings.Contains(out, "crc mismatch") || !strings.Contains(out, "will refuse") {
		t.Fatalf("verify corrupt: code %d\n%s", code, out)
	}
	_, stderr, code := run(t, "journal", "repair", "--json=false", dir)
	if code != exitFailure || !strings.Contains(stderr, "refusing to repair") {
		t.Fatalf("repair corrupt: code %d\n%s", code, stderr)
	}
	after, _ := os.ReadFile(seg)
	if string(after) != string(b) {
		t.Fatal("refused repair changed the segment")
	}
	if _, err := store.Open(context.Background(), dir, store.Options{}); err == nil || !strings.Contains(err.Error(), "journal verify") {
		t.Fatalf("open of a corrupt journal: %v", err)
	}
}
