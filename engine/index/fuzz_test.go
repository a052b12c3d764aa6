package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func samplePage(n int) []byte {
	ents := make([]Entry, n)
	for i := range ents {
		ents[i] = Entry{Block: uint64(10 + i/3), TS: int64(1000 + i), Loc: uint64(i) * 4096}
	}
	page := make([]byte, pageSize)
	encodePage(page, ents, 3, 7)
	return page
}

// FuzzDecodePage: any page either fails the checks with ErrCorrupt or is
// exactly the page the encoder writes for the entries decoded, so a lookup
// never reads a wrong answer out of a page that passed. The input is split
// into the entry area and the trailer fields (small inputs minimise fast),
// and fixCRC lets the fuzzer reach the checks behind the checksum. A body
// longer than a page is decoded as is, for the wrong-size path.
func FuzzDecodePage(f *testing.F) {
	const wantPage, wantFile = 3, 7
	add := func(page []byte, fixCRC bool) {
		le := binary.LittleEndian
		f.Add(bytes.TrimRight(page[:trailerOff], "\x00"), le.Uint32(page[trailerOff:]), le.Uint32(page[trailerOff+4:]),
			le.Uint32(page[trailerOff+8:]), le.Uint32(page[crcOff:]), fixCRC)
	}
	add(samplePage(1), false)
	add(samplePage(perPage), false)
	add(samplePage(50), true)
	flipped := samplePage(50)
	flipped[100] ^= 1
	add(flipped, false)
	add(flipped, true) // out of order once the CRC is fixed
	f.Add(make([]byte, pageSize+1), uint32(0), uint32(0), uint32(0), uint32(0), false)
	f.Fuzz(func(t *testing.T, body []byte, count, pageNo, fileID, crc uint32, fixCRC bool) {
		if len(body) > pageSize {
			checkDecoded(t, body, wantPage, wantFile)
			return
		}
		page := make([]byte, pageSize)
		copy(page[:trailerOff], body)
		le := binary.LittleEndian
		le.PutUint32(page[trailerOff:], count)
		le.PutUint32(page[trailerOff+4:], pageNo)
		le.PutUint32(page[trailerOff+8:], fileID)
		if fixCRC {
			crc = crc32.Checksum(page[:crcOff], castagnoli)
		}
		le.PutUint32(page[crcOff:], crc)
		checkDecoded(t, page, wantPage, wantFile)
	})
}

func checkDecoded(t *testing.T, page []byte, pageNo, fileID uint32) {
	ents, err := decodePage(nil, page, pageNo, fileID)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		return
	}
	if len(ents) == 0 || len(ents) > perPage {
		t.Fatalf("decoded %d entries", len(ents))
	}
	again := make([]byte, pageSize)
	encodePage(again, ents, pageNo, fileID)
	if !bytes.Equal(again, page) {
		t.Fatal("page passed its checks but is not what the encoder writes for its entries")
	}
	if !slices.IsSortedFunc(ents, func(a, b Entry) int {
		if a.Block != b.Block {
			return cmpInt(a.Block, b.Block)
		}
		return cmpInt(a.TS, b.TS)
	}) {
		t.Fatal("decoded entries out of order")
	}
}

// FuzzSpillFile corrupts a spill file on disk (one byte flip and an
// optional truncation): every lookup and Changed must then return either
// ErrCorrupt or the exact answer, never a wrong one, and never panic.
func FuzzSpillFile(f *testing.F) {
	f.Add(uint8(0), uint32(0), uint8(1), uint32(0))
	f.Add(uint8(0), uint32(4090), uint8(0x80), uint32(0))
	f.Add(uint8(1), uint32(5000), uint8(0xff), uint32(0))
	f.Add(uint8(0), uint32(100), uint8(0), uint32(4096))
	f.Add(uint8(2), uint32(8192+4080), uint8(2), uint32(0))
	f.Fuzz(func(t *testing.T, which uint8, off uint32, xor uint8, cut uint32) {
		dir := t.TempDir()
		x, err := New(Options{MemoryLimit: 1, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		m := newModel()
		for ts := int64(1); ts <= 3000; ts++ {
			e := Entry{Block: uint64(ts*37) % 700, TS: ts, Loc: uint64(ts) << 8}
			if err := x.Add(e); err != nil {
				t.Fatal(err)
			}
			m.add(e)
		}
		x.quiesce()
		names, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		for _, de := range names {
			if strings.HasPrefix(de.Name(), spillPrefix) && strings.HasSuffix(de.Name(), spillSuffix) {
				files = append(files, filepath.Join(dir, de.Name()))
			}
		}
		if len(files) == 0 {
			t.Fatal("nothing spilled")
		}
		path := files[int(which)%len(files)]
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if xor != 0 {
			data[int(off)%len(data)] ^= xor
		}
		if cut != 0 {
			data = data[:len(data)-int(cut)%len(data)]
		}
		// Rewrite in place: the index holds the file open.
		fh, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.Write(data); err != nil {
			t.Fatal(err)
		}
		fh.Close()

		for b := uint64(0); b < 700; b++ {
			for _, at := range []int64{math.MaxInt64, 1500, 700} {
				got, ok, err := x.Lookup(b, at)
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("Lookup(%d, %d): %v does not wrap ErrCorrupt", b, at, err)
					}
					continue
				}
				if want, wok := m.want(b, at); ok != wok || got != want {
					t.Fatalf("Lookup(%d, %d) = %+v, %v on a corrupted file; want %+v, %v", b, at, got, ok, want, wok)
				}
			}
		}
		var seen []Entry
		err = x.Changed(0, math.MaxInt64, func(e Entry) bool { seen = append(seen, e); return true })
		want := m.changed(0, math.MaxInt64)
		sortByKey(seen)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Changed: %v does not wrap ErrCorrupt", err)
			}
			for _, e := range seen {
				if _, found := slices.BinarySearchFunc(want, e, func(a, b Entry) int {
					if a.TS != b.TS {
						return cmpInt(a.TS, b.TS)
					}
					return cmpInt(a.Block, b.Block)
				}); !found {
					t.Fatalf("Changed reported %+v, which was never added", e)
				}
			}
			return
		}
		if !slices.Equal(seen, want) {
			t.Fatalf("Changed on a corrupted file: %d entries, want %d", len(seen), len(want))
		}
	})
}

// TestSpillPageMixup puts a valid page of another index's spill file into
// one of this index's (two indexes wrongly sharing a directory, or a
// misdirected write): the CRC passes, so the file id and fence checks must
// turn it into ErrCorrupt.
func TestSpillPageMixup(t *testing.T) {
	build := func(mul int64) (*Index, *model, *spillFile) {
		x, err := New(Options{MemoryLimit: 1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.Close() })
		m := newModel()
		for ts := int64(1); ts <= 3000; ts++ {
			e := Entry{Block: uint64(ts*mul) % 700, TS: ts, Loc: uint64(ts) << 8}
			if err := x.Add(e); err != nil {
				t.Fatal(err)
			}
			m.add(e)
		}
		x.quiesce()
		x.mu.RLock()
		defer x.mu.RUnlock()
		for _, r := range x.runs {
			if r.file != nil {
				return x, m, r.file
			}
		}
		t.Fatal("nothing spilled")
		return nil, nil, nil
	}
	x, m, victim := build(37)
	_, _, other := build(41)
	page := make([]byte, pageSize)
	if _, err := other.f.ReadAt(page, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := victim.f.WriteAt(page, 0); err != nil {
		t.Fatal(err)
	}
	corrupt := 0
	for b := uint64(0); b < 700; b++ {
		for _, at := range []int64{math.MaxInt64, 1500, 700} {
			got, ok, err := x.Lookup(b, at)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Lookup(%d, %d): %v does not wrap ErrCorrupt", b, at, err)
				}
				corrupt++
				continue
			}
			if want, wok := m.want(b, at); ok != wok || got != want {
				t.Fatalf("Lookup(%d, %d) = %+v, %v with a foreign page; want %+v, %v", b, at, got, ok, want, wok)
			}
		}
	}
	if corrupt == 0 {
		t.Fatal("no lookup read the foreign page; the test proves nothing")
	}
}
