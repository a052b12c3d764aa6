package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// A snapshot set file:
//
//	0  8 magic "LSSNAP01"
//	8  4 block size
//	12 4 reserved
//	16 8 entry count
//	24 8 retained point (timestamp)
//	32 4 CRC32C of bytes 0..32
//	36 4 reserved
//
// then count entries sorted by block: block number (8), CRC32C of the data
// (4), reserved (4), data (block size). Memory per entry: 8 bytes (the block
// number, for the binary search).
const (
	snapMagic     = "LSSNAP01"
	snapHeader    = 40
	snapEntryHead = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type snapSet struct {
	at     int64
	file   string
	bs     int
	f      vfs.File
	blocks []uint64
}

func (s *snapSet) entrySize() int64 { return int64(snapEntryHead + s.bs) }

func (s *snapSet) find(b uint64) (int, bool) {
	i := sort.Search(len(s.blocks), func(i int) bool { return s.blocks[i] >= b })
	return i, i < len(s.blocks) && s.blocks[i] == b
}

func (s *snapSet) read(i int, p []byte) error {
	buf := make([]byte, s.entrySize())
	if _, err := s.f.ReadAt(buf, snapHeader+int64(i)*s.entrySize()); err != nil {
		return fmt.Errorf("snapshot set %s entry %d: %w", s.file, i, err)
	}
	if crc32.Checksum(buf[snapEntryHead:], castagnoli) != binary.LittleEndian.Uint32(buf[8:]) {
		return fmt.Errorf("snapshot set %s: block %d: %w", s.file, s.blocks[i], errSnapCorrupt)
	}
	copy(p, buf[snapEntryHead:])
	return nil
}

var errSnapCorrupt = errors.New("store: snapshot set crc mismatch")

// writeSnapSet writes a set holding blocks (sorted, unique) whose data comes
// from fetch, syncs it, and returns it open.
func writeSnapSet(fsys vfs.FS, name string, bs int, at int64, blocks []uint64, fetch func(b uint64, p []byte) error) (*snapSet, error) {
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	hdr := make([]byte, snapHeader)
	copy(hdr, snapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(bs))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(len(blocks)))
	binary.LittleEndian.PutUint64(hdr[24:], uint64(at))
	binary.LittleEndian.PutUint32(hdr[32:], crc32.Checksum(hdr[:32], castagnoli))
	w := bufio.NewWriterSize(&fileWriter{f: f}, 1<<20)
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	ent := make([]byte, snapEntryHead+bs)
	for _, b := range blocks {
		clear(ent)
		binary.LittleEndian.PutUint64(ent, b)
		if err := fetch(b, ent[snapEntryHead:]); err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(ent[8:], crc32.Checksum(ent[snapEntryHead:], castagnoli))
		if _, err := w.Write(ent); err != nil {
			return nil, err
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	ok = true
	return &snapSet{at: at, file: name, bs: bs, f: f, blocks: blocks}, nil
}

type fileWriter struct {
	f   vfs.File
	off int64
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

func openSnapSet(fsys vfs.FS, name string, bs int) (*snapSet, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, snapHeader)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot set %s: header: %w", name, err)
	}
	if string(hdr[:8]) != snapMagic || crc32.Checksum(hdr[:32], castagnoli) != binary.LittleEndian.Uint32(hdr[32:]) {
		f.Close()
		return nil, fmt.Errorf("snapshot set %s: %w: bad header", name, errSnapCorrupt)
	}
	if got := int(binary.LittleEndian.Uint32(hdr[8:])); got != bs {
		f.Close()
		return nil, fmt.Errorf("snapshot set %s: block size %d, volume has %d", name, got, bs)
	}
	n := binary.LittleEndian.Uint64(hdr[16:])
	s := &snapSet{at: int64(binary.LittleEndian.Uint64(hdr[24:])), file: name, bs: bs, f: f}
	size, err := f.Size()
	if err != nil || uint64(size) != snapHeader+n*uint64(s.entrySize()) {
		f.Close()
		return nil, fmt.Errorf("snapshot set %s: size %d does not hold %d entries: %w", name, size, n, errSnapCorrupt)
	}
	s.blocks = make([]uint64, n)
	r := bufio.NewReaderSize(io.NewSectionReader(f, snapHeader, size-snapHeader), 1<<20)
	ent := make([]byte, s.entrySize())
	for i := range s.blocks {
		if _, err := io.ReadFull(r, ent); err != nil {
			f.Close()
			return nil, fmt.Errorf("snapshot set %s: %w", name, err)
		}
		s.blocks[i] = binary.LittleEndian.Uint64(ent)
		if i > 0 && s.blocks[i] <= s.blocks[i-1] {
			f.Close()
			return nil, fmt.Errorf("snapshot set %s: blocks out of order at entry %d: %w", name, i, errSnapCorrupt)
		}
	}
	return s, nil
}
