package journal

import (
	"bytes"
	"context"
	"errors"
	"path"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, &Record{Type: TypeWrite, Volume: 1, Seq: 1, TS: 5, Offset: 512, Length: 4, Data: []byte("abcd")}))
	f.Add(appendRecord(nil, &Record{Type: TypeUnmap, Volume: 2, Seq: 9, TS: 7, Offset: 0, Length: 4096}))
	f.Add(appendRecord(nil, &Record{Type: TypeMarker, Seq: 3, TS: 8, Marker: &MarkerRec{ID: "x", Service: "s", Class: "app", Volumes: []uint32{1, 2}, Evidence: []byte("{}")}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrTorn) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		// A record that decodes re-encodes to the same bytes.
		again := appendRecord(nil, r)
		if !bytes.Equal(again, b[:r.Size()]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzSegment feeds arbitrary bytes after a valid segment header to Open and
// Verify: they must either succeed or classify the damage, never panic.
func FuzzSegment(f *testing.F) {
	var valid []byte
	for i := 1; i <= 3; i++ {
		valid = appendRecord(valid, &Record{Type: TypeWrite, Volume: 1, Seq: uint64(i), TS: int64(i), Length: 8, Data: []byte("datadata")})
	}
	f.Add(valid, int64(segHeaderSize))
	f.Add(valid[:len(valid)-3], int64(segHeaderSize+20))
	f.Add([]byte{1, 2, 3}, int64(1000))
	f.Fuzz(func(t *testing.T, body []byte, synced int64) {
		fsys := vfs.NewCrashFS()
		dir := "/wal"
		hdr := encodeSegHeader(segHeader{num: 1, firstSeq: 1, syncedThrough: synced})
		fsys.MkdirAll(dir, 0o700)
		if err := vfs.WriteFileAtomic(fsys, path.Join(dir, segName(1)), append(hdr, body...), 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(context.Background(), fsys, dir)
		if err != nil {
			t.Fatal(err)
		}
		l, _, err := Open(context.Background(), dir, Options{FS: fsys}, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclassified open error: %v", err)
			}
			if rep.Repairable() {
				t.Fatalf("verify said repairable, open refused: %v", err)
			}
			return
		}
		defer l.Close()
		if !rep.Repairable() {
			t.Fatalf("open accepted what verify called corrupt: %v", rep.Damage)
		}
		if got := l.LastSeq(); got != rep.LastSeq && !(rep.LastSeq == 0 && got == 0) {
			t.Fatalf("open kept through seq %d, verify %d", got, rep.LastSeq)
		}
	})
}
