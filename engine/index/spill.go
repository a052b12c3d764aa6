package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Spill file format (a cache: never read across restarts).
//
// A spill file is a sequence of 4096-byte pages; entries ascend by (Block, TS)
// across the whole file. Each page holds 1..170 entries of 24 bytes
// (Block uint64, TS int64, Loc uint64, little-endian) from offset 0, zeros up
// to offset 4080, then a trailer of four little-endian uint32: the entry
// count, the page number, the file id, and the CRC-32C of bytes [0, 4092).
// Only the first key of every page (the fence) is kept in memory; a lookup
// reads and checks exactly one page.
const (
	pageSize    = 4096
	entrySize   = 24
	perPage     = 170
	trailerOff  = perPage * entrySize // 4080
	crcOff      = pageSize - 4
	chunkPages  = 16 // pages per read or write call when streaming
	fenceBytes  = 16 // in-memory cost of one page's fence
	spillPrefix = "spill-"
	spillSuffix = ".idx"
	tmpSuffix   = ".tmp"
)

// ErrCorrupt reports a spill page that fails its checks. Spill files are a
// cache the index wrote itself, so this means the disk or another process
// altered them.
var ErrCorrupt = errors.New("index: corrupt spill page")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type key struct {
	Block uint64
	TS    int64
}

func keyLess(a, b key) bool { return a.Block < b.Block || (a.Block == b.Block && a.TS < b.TS) }

func putEntry(b []byte, e Entry) {
	binary.LittleEndian.PutUint64(b[0:8], e.Block)
	binary.LittleEndian.PutUint64(b[8:16], uint64(e.TS))
	binary.LittleEndian.PutUint64(b[16:24], e.Loc)
}

func getEntry(b []byte) Entry {
	return Entry{
		Block: binary.LittleEndian.Uint64(b[0:8]),
		TS:    int64(binary.LittleEndian.Uint64(b[8:16])),
		Loc:   binary.LittleEndian.Uint64(b[16:24]),
	}
}

// sealPage zeroes the unused entry slots of page and writes its trailer.
func sealPage(page []byte, count int, pageNo, fileID uint32) {
	clear(page[count*entrySize : trailerOff])
	binary.LittleEndian.PutUint32(page[trailerOff:], uint32(count))
	binary.LittleEndian.PutUint32(page[trailerOff+4:], pageNo)
	binary.LittleEndian.PutUint32(page[trailerOff+8:], fileID)
	binary.LittleEndian.PutUint32(page[crcOff:], crc32.Checksum(page[:crcOff], castagnoli))
}

// encodePage writes ents (1..perPage of them, sorted) as page pageNo.
func encodePage(page []byte, ents []Entry, pageNo, fileID uint32) {
	for i, e := range ents {
		putEntry(page[i*entrySize:], e)
	}
	sealPage(page, len(ents), pageNo, fileID)
}

// checkTrailer verifies page's checksum and trailer, and returns its entry
// count. Enough for a lookup: CRC-32C catches any corruption short of a
// deliberate forgery.
func checkTrailer(page []byte, pageNo, fileID uint32) (int, error) {
	if len(page) != pageSize {
		return 0, fmt.Errorf("%w: page %d: %d bytes, want %d", ErrCorrupt, pageNo, len(page), pageSize)
	}
	if got, want := binary.LittleEndian.Uint32(page[crcOff:]), crc32.Checksum(page[:crcOff], castagnoli); got != want {
		return 0, fmt.Errorf("%w: page %d: crc %#08x, want %#08x", ErrCorrupt, pageNo, got, want)
	}
	n := binary.LittleEndian.Uint32(page[trailerOff:])
	if n == 0 || n > perPage {
		return 0, fmt.Errorf("%w: page %d: %d entries, want 1..%d", ErrCorrupt, pageNo, n, perPage)
	}
	if got := binary.LittleEndian.Uint32(page[trailerOff+4:]); got != pageNo {
		return 0, fmt.Errorf("%w: page %d: trailer says page %d", ErrCorrupt, pageNo, got)
	}
	if got := binary.LittleEndian.Uint32(page[trailerOff+8:]); got != fileID {
		return 0, fmt.Errorf("%w: page %d: file id %d, want %d", ErrCorrupt, pageNo, got, fileID)
	}
	return int(n), nil
}

// checkPage is checkTrailer plus the page's structure: entries in key
// order and zeros after them, i.e. exactly what encodePage writes.
func checkPage(page []byte, pageNo, fileID uint32) (int, error) {
	n, err := checkTrailer(page, pageNo, fileID)
	if err != nil {
		return 0, err
	}
	prev := getEntry(page)
	for i := 1; i < n; i++ {
		e := getEntry(page[i*entrySize:])
		if keyLess(key{e.Block, e.TS}, key{prev.Block, prev.TS}) {
			return 0, fmt.Errorf("%w: page %d: entry %d out of order", ErrCorrupt, pageNo, i)
		}
		prev = e
	}
	for _, c := range page[n*entrySize : trailerOff] {
		if c != 0 {
			return 0, fmt.Errorf("%w: page %d: garbage after entry %d", ErrCorrupt, pageNo, n)
		}
	}
	return n, nil
}

// decodePage checks page and appends its entries to dst.
func decodePage(dst []Entry, page []byte, pageNo, fileID uint32) ([]Entry, error) {
	n, err := checkPage(page, pageNo, fileID)
	if err != nil {
		return dst, err
	}
	for i := 0; i < n; i++ {
		dst = append(dst, getEntry(page[i*entrySize:]))
	}
	return dst, nil
}

var pagePool = sync.Pool{New: func() any { return new([pageSize]byte) }}

// spillFile is an immutable sorted run on disk. It is reference counted:
// the index holds one reference while the run is live, and Changed holds
// one while it iterates, so a merge or DropThrough never closes a file under
// a reader. Lookup runs under the index's read lock instead, which the
// writer takes before dropping its reference.
type spillFile struct {
	fsys   vfs.FS
	f      vfs.File
	path   string
	id     uint32
	fences []key // first key of every page
	n      int
	refs   atomic.Int32
}

func (s *spillFile) acquire() { s.refs.Add(1) }

// release drops a reference; the last one closes and deletes the file.
func (s *spillFile) release() error {
	if s.refs.Add(-1) != 0 {
		return nil
	}
	err := s.f.Close()
	if rerr := s.fsys.Remove(s.path); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("index: remove spill file %q: %w", s.path, err)
	}
	return nil
}

func (s *spillFile) memBytes() int64 { return int64(cap(s.fences)) * fenceBytes }

func (s *spillFile) readPages(buf []byte, first int) error {
	n, err := s.f.ReadAt(buf, int64(first)*pageSize)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("index: spill file %q: %w: short read at page %d", s.path, ErrCorrupt, first)
	}
	return fmt.Errorf("index: read spill file %q: %w", s.path, err)
}

// lookup returns the newest entry of block b with TS <= at, reading one page.
func (s *spillFile) lookup(b uint64, at int64) (Entry, bool, error) {
	k := key{b, at}
	lo, hi := 0, len(s.fences)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if !keyLess(k, s.fences[mid]) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	p := lo - 1 // the last page whose first key is <= k holds k's predecessor
	if p < 0 {
		return Entry{}, false, nil
	}
	buf := pagePool.Get().(*[pageSize]byte)
	defer pagePool.Put(buf)
	page := buf[:]
	if err := s.readPages(page, p); err != nil {
		return Entry{}, false, err
	}
	n, err := checkTrailer(page, uint32(p), s.id)
	if err != nil {
		return Entry{}, false, fmt.Errorf("index: spill file %q: %w", s.path, err)
	}
	if first := getEntry(page); first.Block != s.fences[p].Block || first.TS != s.fences[p].TS {
		return Entry{}, false, fmt.Errorf("index: spill file %q: %w: page %d does not start at its fence", s.path, ErrCorrupt, p)
	}
	lo, hi = 0, n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		off := mid * entrySize
		eb := binary.LittleEndian.Uint64(page[off:])
		ets := int64(binary.LittleEndian.Uint64(page[off+8:]))
		if eb < b || (eb == b && ets <= at) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return Entry{}, false, nil
	}
	e := getEntry(page[(lo-1)*entrySize:])
	if e.Block != b {
		return Entry{}, false, nil
	}
	return e, true, nil
}

// spillReader streams a spill file's entries in key order.
type spillReader struct {
	s    *spillFile
	buf  []byte
	ents []Entry
	i    int
	page int // next page to read
}

func newSpillReader(s *spillFile) *spillReader {
	return &spillReader{s: s, buf: make([]byte, chunkPages*pageSize), ents: make([]Entry, 0, chunkPages*perPage)}
}

// next returns the next entry; ok is false at the end of the file.
func (r *spillReader) next() (e Entry, ok bool, err error) {
	if r.i == len(r.ents) {
		if r.page >= len(r.s.fences) {
			return Entry{}, false, nil
		}
		k := min(chunkPages, len(r.s.fences)-r.page)
		buf := r.buf[:k*pageSize]
		if err := r.s.readPages(buf, r.page); err != nil {
			return Entry{}, false, err
		}
		r.ents, r.i = r.ents[:0], 0
		for j := 0; j < k; j++ {
			p := r.page + j
			before := len(r.ents)
			r.ents, err = decodePage(r.ents, buf[j*pageSize:(j+1)*pageSize], uint32(p), r.s.id)
			if err != nil {
				return Entry{}, false, fmt.Errorf("index: spill file %q: %w", r.s.path, err)
			}
			if f := r.s.fences[p]; r.ents[before].Block != f.Block || r.ents[before].TS != f.TS {
				return Entry{}, false, fmt.Errorf("index: spill file %q: %w: page %d does not start at its fence", r.s.path, ErrCorrupt, p)
			}
		}
		r.page += k
	}
	e = r.ents[r.i]
	r.i++
	return e, true, nil
}

// spillWriter writes sorted entries to a new spill file under a temp name,
// renamed when complete. It does not fsync: spill files are deleted at New,
// so no crash can expose them, and a sync would stall Add for nothing.
type spillWriter struct {
	fsys    vfs.FS
	f       vfs.File
	tmp     string
	path    string
	id      uint32
	buf     []byte
	pageOff int // offset of the current page in buf
	inPage  int
	pageNo  uint32
	fileOff int64
	fences  []key
	n       int
	err     error
}

func createSpill(fsys vfs.FS, dir string, id uint32) (*spillWriter, error) {
	path := filepath.Join(dir, fmt.Sprintf("%s%010d%s", spillPrefix, id, spillSuffix))
	tmp := path + tmpSuffix
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("index: create spill file %q: %w", tmp, err)
	}
	return &spillWriter{fsys: fsys, f: f, tmp: tmp, path: path, id: id, buf: make([]byte, chunkPages*pageSize)}, nil
}

func (w *spillWriter) add(e Entry) {
	if w.err != nil {
		return
	}
	if w.inPage == 0 {
		w.fences = append(w.fences, key{e.Block, e.TS})
	}
	putEntry(w.buf[w.pageOff+w.inPage*entrySize:], e)
	w.inPage++
	w.n++
	if w.inPage == perPage {
		w.sealPage()
	}
}

func (w *spillWriter) sealPage() {
	sealPage(w.buf[w.pageOff:w.pageOff+pageSize], w.inPage, w.pageNo, w.id)
	w.pageNo++
	w.inPage = 0
	w.pageOff += pageSize
	if w.pageOff == len(w.buf) {
		w.flush()
	}
}

func (w *spillWriter) flush() {
	if w.pageOff == 0 || w.err != nil {
		return
	}
	if _, err := w.f.WriteAt(w.buf[:w.pageOff], w.fileOff); err != nil {
		w.err = fmt.Errorf("index: write spill file %q: %w", w.tmp, err)
	}
	w.fileOff += int64(w.pageOff)
	w.pageOff = 0
}

// finish completes the file and returns it holding one reference, or nil if
// no entry was added.
func (w *spillWriter) finish() (*spillFile, error) {
	if w.inPage > 0 {
		w.sealPage()
	}
	w.flush()
	if w.err == nil && w.n == 0 {
		w.abort()
		return nil, nil
	}
	if w.err == nil {
		if err := w.fsys.Rename(w.tmp, w.path); err != nil {
			w.err = fmt.Errorf("index: rename spill file %q: %w", w.tmp, err)
		}
	}
	if w.err != nil {
		err := w.err
		w.abort()
		return nil, err
	}
	s := &spillFile{fsys: w.fsys, f: w.f, path: w.path, id: w.id, fences: exactCopy(w.fences), n: w.n}
	s.refs.Store(1)
	return s, nil
}

func (w *spillWriter) abort() {
	w.f.Close()
	w.fsys.Remove(w.tmp)
}
