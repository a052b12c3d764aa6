package journal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Options configure a Log.
type Options struct {
	FS    vfs.FS
	Clock clock.Clock
	// SegmentSize is the size at which a new segment is cut (default 64 MiB).
	SegmentSize int64
	// WriteBehind is the number of buffered bytes at which the buffer is
	// handed to the file without waiting for a sync (default 4 MiB): by a
	// goroutine of its own, so appenders go on filling the other buffer,
	// unless twice as much is buffered, when the appender writes itself.
	// It bounds the log's memory: two buffers of 2×WriteBehind at most
	// (plus one record).
	WriteBehind int
	// Cache is the number of bytes of the most recently written records
	// kept in memory for reads (0: none). The files are written past the
	// page cache, so reads of anything older come from the disk.
	Cache  int64
	Logger *slog.Logger
}

func (o *Options) fill() {
	if o.FS == nil {
		o.FS = vfs.OS{}
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = 64 << 20
	}
	if o.WriteBehind <= 0 {
		o.WriteBehind = 4 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("journal: closed")

type segment struct {
	num      uint64
	firstSeq uint64
	lastSeq  uint64 // 0 when empty
	lastTS   int64
	f        vfs.File
	written  int64 // bytes handed to the file
	// prealloc: the file was preallocated to the segment size, so zeroAhead
	// may write zeros past written; zeroed is where its zeros end.
	prealloc bool
	zeroed   int64
	// synced is the synced-through slot as Open read it.
	synced int64
}

// SegmentInfo describes a segment for retention decisions.
type SegmentInfo struct {
	Num      uint64
	FirstSeq uint64
	LastSeq  uint64 // 0 when the segment holds no record
	LastTS   int64
	Size     int64
	Active   bool
}

// Log is an open journal. Append, Sync and ReadData are safe for concurrent
// use.
type Log struct {
	dir  string
	opts Options

	// syncMu serialises everything that writes files: write-behind,
	// fsync, segment rotation and removal. Lock order: syncMu, then mu.
	syncMu sync.Mutex

	mu          sync.Mutex
	segs        map[uint64]*segment
	order       []uint64 // segment numbers, oldest first
	active      *segment
	buf         []byte       // encoded records not yet handed to the file
	bufMem      []byte       // the memory buf lies in (see vfs.AlignedAt)
	spareMem    []byte       // the other buffer's memory, free while buf fills
	noDirect    atomic.Bool  // the file system refused direct I/O
	directBytes atomic.Int64 // bytes written past the page cache
	readMemory  atomic.Int64 // bytes ReadData served from buffers and cache
	readFile    atomic.Int64 // bytes ReadData read from the files
	bufOff      int64        // offset in active where buf starts
	bufLastSeq  uint64
	inflight    []byte // being written by syncMu's holder
	inflightSeg *segment
	inflightOff int64
	nextSeq     uint64
	lastTS      int64
	closed      bool
	failed      error // sticky: after a write or fsync error nothing is acknowledged

	wbBusy atomic.Bool // a background write-behind is running
	cache  tailCache

	// unsynced are sealed segments whose records may not be durable yet:
	// a seal does not fsync, the next sync does, oldest first (syncMu).
	unsynced []*segment

	writtenSeq uint64        // last seq handed to a file (syncMu)
	durableSeq atomic.Uint64 // last seq known durable
	// The synced-through slot is rewritten only every slotEvery bytes or
	// slotAge, so a single writer's fsyncs don't each write the header
	// page too (syncMu).
	slotSeg  uint64
	slotOff  int64
	slotTime time.Time
}

// OpenReport tells what Open found and did.
type OpenReport struct {
	Segments  int
	Records   uint64
	FirstSeq  uint64
	LastSeq   uint64
	LastTS    int64
	Truncated []Damage // torn tails that were cut off (a copy is kept in torn/)
}

// ScanFunc receives every record at Open in log order, with its location.
// rec.Data aliases a buffer that is reused after the call returns.
type ScanFunc func(rec *Record, loc Loc) error

// Open opens (or creates) the log in dir, repairs a torn tail of the newest
// segment, and calls fn for every record. It fails with ErrCorrupt when it
// finds damage that is not a torn tail.
func Open(ctx context.Context, dir string, opts Options, fn ScanFunc) (*Log, *OpenReport, error) {
	opts.fill()
	l := &Log{dir: dir, opts: opts, segs: map[uint64]*segment{}, nextSeq: 1, cache: tailCache{size: opts.Cache}}
	if err := vfs.MkdirAllDurable(opts.FS, dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("journal %q: %w", dir, err)
	}
	nums, err := listSegments(opts.FS, dir)
	if err != nil {
		return nil, nil, err
	}
	rep := &OpenReport{}
	hdrs, herrs := segHeaders(opts.FS, dir, nums)
	acked := ackedAfter(hdrs, herrs)
	for i, num := range nums {
		if err := ctx.Err(); err != nil {
			l.closeFiles()
			return nil, nil, err
		}
		if i > 0 && num != nums[i-1]+1 {
			l.closeFiles()
			return nil, nil, fmt.Errorf("%w: segment %s missing between %s and %s", ErrCorrupt, segName(nums[i-1]+1), segName(nums[i-1]), segName(num))
		}
		// A torn tail may end any segment after which no sync was ever
		// acknowledged: sealed segments are made durable by the next sync,
		// not by the seal. A tail lost whole reads as zeros, so the
		// previous segment ended early and this one does not continue it.
		if i > 0 && !acked[i-1] && herrs[i] == nil && hdrs[i].firstSeq != l.nextSeq {
			if err := l.setAside(nums[i:], segName(nums[i-1]), rep); err != nil {
				l.closeFiles()
				return nil, nil, err
			}
			break
		}
		cut := len(rep.Truncated)
		seg, err := l.openSegment(num, !acked[i], rep, fn)
		if err != nil {
			l.closeFiles()
			return nil, nil, err
		}
		l.segs[num] = seg
		l.order = append(l.order, num)
		l.active = seg
		if len(rep.Truncated) > cut && i < len(nums)-1 {
			// Everything after a torn tail is unacknowledged: set it aside.
			if err := l.setAside(nums[i+1:], segName(num), rep); err != nil {
				l.closeFiles()
				return nil, nil, err
			}
			break
		}
	}
	if l.active == nil {
		if err := l.createSegment(1, 1); err != nil {
			return nil, nil, err
		}
	} else {
		// Records that survived a process crash may still sit only in the
		// page cache, in the active segment and in sealed ones never
		// synced; make them durable before anything builds on them.
		for _, num := range l.order[:len(l.order)-1] {
			if seg := l.segs[num]; seg.synced < seg.written {
				l.unsynced = append(l.unsynced, seg)
			}
		}
		if err := l.syncSealed(); err != nil {
			l.closeFiles()
			return nil, nil, fmt.Errorf("journal %q: %w", dir, err)
		}
		if err := l.active.f.Sync(); err != nil {
			l.closeFiles()
			return nil, nil, fmt.Errorf("journal %q: sync %s: %w", dir, segName(l.active.num), err)
		}
		if err := l.writeSyncedSlot(l.active, l.active.written); err != nil {
			l.closeFiles()
			return nil, nil, err
		}
		if l.active.written < opts.SegmentSize {
			l.active.prealloc = preallocate(l.active.f, opts.SegmentSize)
		}
	}
	l.bufOff = l.active.written
	l.writtenSeq = l.nextSeq - 1
	l.durableSeq.Store(l.nextSeq - 1)
	rep.Segments = len(l.order)
	rep.LastSeq = l.nextSeq - 1
	rep.LastTS = l.lastTS
	if len(l.order) > 0 {
		rep.FirstSeq = l.segs[l.order[0]].firstSeq
	}
	return l, rep, nil
}

func listSegments(fsys vfs.FS, dir string) ([]uint64, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal %q: %w", dir, err)
	}
	var nums []uint64
	for _, n := range names {
		if num, ok := parseSegName(n); ok {
			nums = append(nums, num)
		}
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	return nums, nil
}

// readWhole reads a whole segment file.
func readWhole(f vfs.File) ([]byte, error) {
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, size)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}

// segHeaders reads the header of every segment of nums; errs[i] is set
// where one cannot be read.
func segHeaders(fsys vfs.FS, dir string, nums []uint64) (hdrs []segHeader, errs []error) {
	hdrs, errs = make([]segHeader, len(nums)), make([]error, len(nums))
	for i, num := range nums {
		hdrs[i], errs[i] = readSegHeader(fsys, segPath(dir, num))
	}
	return hdrs, errs
}

// ackedAfter tells, for each segment, whether a later one records an
// acknowledged sync (its synced-through slot is past its header). A header
// that cannot be read counts as acknowledged, so that damage before it is
// never taken for a torn tail.
func ackedAfter(hdrs []segHeader, errs []error) []bool {
	out := make([]bool, len(hdrs))
	later := false
	for i := len(hdrs) - 1; i >= 0; i-- {
		out[i] = later
		if errs[i] != nil || hdrs[i].syncedThrough > segHeaderSize {
			later = true
		}
	}
	return out
}

// readSegHeader reads the header of the segment file p.
func readSegHeader(fsys vfs.FS, p string) (segHeader, error) {
	f, err := fsys.OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		return segHeader{}, err
	}
	defer f.Close()
	b := make([]byte, segHeaderSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return segHeader{}, err
	}
	return decodeSegHeader(b)
}

// setAside moves the segments nums, which follow a torn tail cut in
// segment after, into torn/: none of their records was acknowledged.
func (l *Log) setAside(nums []uint64, after string, rep *OpenReport) error {
	tornDir := path.Join(l.dir, "torn")
	if err := l.opts.FS.MkdirAll(tornDir, 0o750); err != nil {
		return fmt.Errorf("journal: set aside segments after %s: %w", after, err)
	}
	for _, num := range nums {
		name := segName(num)
		if err := l.opts.FS.Rename(segPath(l.dir, num), path.Join(tornDir, name)); err != nil {
			return fmt.Errorf("journal: set aside %s: %w", name, err)
		}
		rep.Truncated = append(rep.Truncated, Damage{Segment: name, Problem: "follows the torn tail of " + after + "; nothing in it was acknowledged", TornTail: true})
		l.opts.Logger.Warn("journal: set aside a segment after a torn tail", "segment", name, "after", after)
	}
	if err := l.opts.FS.SyncDir(tornDir); err != nil {
		return fmt.Errorf("journal: set aside segments after %s: %w", after, err)
	}
	if err := l.opts.FS.SyncDir(l.dir); err != nil {
		return fmt.Errorf("journal: set aside segments after %s: %w", after, err)
	}
	return nil
}

func (l *Log) openSegment(num uint64, tornOK bool, rep *OpenReport, fn ScanFunc) (*segment, error) {
	name := segName(num)
	p := segPath(l.dir, num)
	f, err := l.opts.FS.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("journal: open segment %s: %w", name, err)
	}
	b, err := readWhole(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal: read segment %s: %w", name, err)
	}
	h, err := decodeSegHeader(b)
	if err == nil && h.num != num {
		err = fmt.Errorf("%w: header names segment %d", errBadHeader, h.num)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: segment %s: %v", ErrCorrupt, name, err)
	}
	if len(l.order) > 0 && h.firstSeq != l.nextSeq {
		f.Close()
		return nil, fmt.Errorf("%w: segment %s starts at seq %d, expected %d (records missing)", ErrCorrupt, name, h.firstSeq, l.nextSeq)
	}
	if len(l.order) == 0 {
		l.nextSeq = h.firstSeq
	}
	seg := &segment{num: num, firstSeq: h.firstSeq, f: f, synced: h.syncedThrough}
	order := recordOrder{nextSeq: l.nextSeq, lastTS: l.lastTS}
	off, derr, err := scanRecords(b, h, &order, func(rec *Record, off int64) error {
		if fn != nil {
			if err := fn(rec, MakeLoc(num, off)); err != nil {
				return err
			}
		}
		seg.lastSeq, seg.lastTS = rec.Seq, rec.TS
		rep.Records++
		return nil
	})
	l.nextSeq, l.lastTS = order.nextSeq, order.lastTS
	if err != nil {
		f.Close()
		return nil, err
	}
	if derr != nil {
		if !errors.Is(derr, ErrTorn) || !tornOK || off < h.syncedThrough {
			f.Close()
			return nil, fmt.Errorf("%w: segment %s offset %d: %v (synced through %d); run `lockstep journal verify`", ErrCorrupt, name, off, derr, h.syncedThrough)
		}
		d := Damage{Segment: name, Offset: off, Problem: derr.Error(), TornTail: true}
		if err := l.cutTail(f, name, b, off); err != nil {
			f.Close()
			return nil, err
		}
		rep.Truncated = append(rep.Truncated, d)
		l.opts.Logger.Warn("journal: cut torn tail", "segment", name, "offset", off, "bytes", int64(len(b))-off, "reason", derr.Error())
	}
	seg.written = off
	return seg, nil
}

// cutTail keeps a copy of b[off:] under torn/ and truncates the segment.
func (l *Log) cutTail(f vfs.File, name string, b []byte, off int64) error {
	tornDir := path.Join(l.dir, "torn")
	if err := l.opts.FS.MkdirAll(tornDir, 0o750); err != nil {
		return fmt.Errorf("journal: keep torn tail of %s: %w", name, err)
	}
	keep := path.Join(tornDir, fmt.Sprintf("%s.%d.tail", name, off))
	// Zeros after the damage are preallocated space, not part of it.
	tail := b[off:]
	tail = tail[:lastNonZero(tail)]
	if err := vfs.WriteFileAtomic(l.opts.FS, keep, tail, 0o640); err != nil {
		return fmt.Errorf("journal: keep torn tail of %s: %w", name, err)
	}
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("journal: truncate %s at %d: %w", name, off, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", name, err)
	}
	return nil
}

func (l *Log) createSegment(num, firstSeq uint64) error {
	p := segPath(l.dir, num)
	tmp := p + ".tmp"
	f, err := l.opts.FS.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("journal: create segment %s: %w", segName(num), err)
	}
	fail := func(err error) error {
		f.Close()
		return fmt.Errorf("journal: create segment %s: %w", segName(num), err)
	}
	if _, err := f.WriteAt(encodeSegHeader(segHeader{num: num, firstSeq: firstSeq, syncedThrough: segHeaderSize}), 0); err != nil {
		return fail(err)
	}
	prealloc := preallocate(f, l.opts.SegmentSize)
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := l.opts.FS.Rename(tmp, p); err != nil {
		return fail(err)
	}
	if err := l.opts.FS.SyncDir(l.dir); err != nil {
		return fail(err)
	}
	seg := &segment{num: num, firstSeq: firstSeq, f: f, written: segHeaderSize, prealloc: prealloc}
	l.segs[num] = seg
	l.order = append(l.order, num)
	l.active = seg
	l.bufOff = segHeaderSize
	return nil
}

func (l *Log) writeSyncedSlot(seg *segment, off int64) error {
	if _, err := seg.f.WriteAt(encodeSyncedSlot(off), syncedSlotOff); err != nil {
		return fmt.Errorf("journal: segment %s: record synced offset: %w", segName(seg.num), err)
	}
	return nil
}

// Append assigns r the next sequence number and a timestamp later than every
// earlier record's, buffers it, and calls onAppend with its location while
// still holding the log's order, so callers can index records in log order.
// The record is visible to ReadData at once and durable after Sync(seq).
func (l *Log) Append(r *Record, onAppend func(seq uint64, ts int64, loc Loc)) (uint64, int64, error) {
	if r.Type == TypeWrite && len(r.Data) > MaxWrite {
		return 0, 0, fmt.Errorf("journal: write of %d bytes exceeds the %d-byte record limit", len(r.Data), MaxWrite)
	}
	size := int64(frameSize + encodedBodySize(r))
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return 0, 0, ErrClosed
		}
		if l.failed != nil {
			err := l.failed
			l.mu.Unlock()
			return 0, 0, err
		}
		end := l.bufOff + int64(len(l.buf))
		if end+size > l.opts.SegmentSize && end > segHeaderSize {
			num := l.active.num
			l.mu.Unlock()
			if err := l.rotate(num); err != nil {
				return 0, 0, err
			}
			continue
		}
		if len(l.buf)+int(size) > cap(l.buf) {
			l.growBuf(int(size))
		}
		r.Seq = l.nextSeq
		l.nextSeq++
		ts := l.opts.Clock.Now().UnixNano()
		if ts <= l.lastTS {
			ts = l.lastTS + 1
		}
		l.lastTS = ts
		r.TS = ts
		loc := MakeLoc(l.active.num, end)
		l.buf = appendRecord(l.buf, r)
		l.bufLastSeq = r.Seq
		l.active.lastSeq, l.active.lastTS = r.Seq, ts
		if onAppend != nil {
			onAppend(r.Seq, ts, loc)
		}
		behind, over := len(l.buf) >= l.opts.WriteBehind, len(l.buf) >= 2*l.opts.WriteBehind
		l.mu.Unlock()
		switch {
		case over:
			// The background write fell behind: wait for the disk.
			if err := l.writeOut(false, 0); err != nil {
				return 0, 0, err
			}
		case behind:
			l.writeBehind()
		}
		return r.Seq, ts, nil
	}
}

// writeBehind hands the buffer to the file on a goroutine of its own, so
// that the appender (an iSCSI connection's reader, say) does not stall for
// a multi-MiB write. One runs at a time; an error is sticky (writeOut), so
// the next Append or Sync reports it.
func (l *Log) writeBehind() {
	if !l.wbBusy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.wbBusy.Store(false)
		l.writeOut(false, 0)
	}()
}

// Sync returns when every record with sequence number <= seq is durable.
// Concurrent callers share fsyncs: while one fsync runs, later records
// gather in the buffer and the next caller syncs them all at once.
func (l *Log) Sync(ctx context.Context, seq uint64) error {
	if l.durableSeq.Load() >= seq {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.writeOut(true, seq)
}

// SyncAll makes every record appended so far durable.
func (l *Log) SyncAll(ctx context.Context) error {
	l.mu.Lock()
	seq := l.nextSeq - 1
	l.mu.Unlock()
	return l.Sync(ctx, seq)
}

// DurableSeq is the newest sequence number known durable.
func (l *Log) DurableSeq() uint64 { return l.durableSeq.Load() }

// LastSeq is the newest sequence number appended.
func (l *Log) LastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextSeq - 1
}

// Tick returns a timestamp later than every record's so far; every later
// record's will be later still. It marks moments such as a volume's creation.
func (l *Log) Tick() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := l.opts.Clock.Now().UnixNano()
	if ts <= l.lastTS {
		ts = l.lastTS + 1
	}
	l.lastTS = ts
	return ts
}

// LastTS is the newest timestamp assigned.
func (l *Log) LastTS() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastTS
}

func (l *Log) fail(err error) error {
	l.mu.Lock()
	if l.failed == nil {
		l.failed = fmt.Errorf("journal %q: failed, nothing further is acknowledged: %w", l.dir, err)
	}
	err = l.failed
	l.mu.Unlock()
	return err
}

// writeOut hands the buffer to the active segment and, when sync is set,
// fsyncs it unless seq is already durable.
func (l *Log) writeOut(sync bool, seq uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if sync && l.durableSeq.Load() >= seq {
		return nil
	}
	l.mu.Lock()
	if l.failed != nil {
		err := l.failed
		l.mu.Unlock()
		return err
	}
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	seg, data, mem, off, last := l.active, l.buf, l.bufMem, l.bufOff, l.bufLastSeq
	// Two buffers take turns: the one just written becomes the next spare,
	// so steady syncing allocates nothing however large a past burst was.
	l.bufOff += int64(len(data))
	l.bufMem, l.spareMem = l.spareMem, nil
	l.buf = nil
	if l.bufMem != nil {
		l.buf = vfs.AlignedAt(l.bufMem, l.bufOff)
	}
	l.inflight, l.inflightSeg, l.inflightOff = data, seg, off
	l.mu.Unlock()

	if err := l.writeAt(seg, data, off); err != nil {
		return l.fail(err)
	}
	l.cache.add(seg.num, off, data)
	l.mu.Lock()
	seg.written = off + int64(len(data))
	l.inflight, l.inflightSeg = nil, nil
	if cap(mem) <= 2*l.opts.WriteBehind+bufSlack+MaxRecordBody+vfs.DirectAlign {
		l.spareMem = mem
	}
	l.mu.Unlock()
	if len(data) > 0 {
		l.writtenSeq = last
	}
	if !sync {
		return nil
	}
	if err := l.syncSealed(); err != nil {
		return l.fail(err)
	}
	if len(data) <= zeroAheadMaxFlush {
		if err := l.zeroAhead(seg); err != nil {
			return l.fail(err)
		}
	}
	if err := seg.f.Sync(); err != nil {
		return l.fail(fmt.Errorf("sync segment %s: %w", segName(seg.num), err))
	}
	l.durableSeq.Store(l.writtenSeq)
	if seg.num != l.slotSeg || seg.written-l.slotOff >= slotEvery || time.Since(l.slotTime) >= slotAge {
		l.slotSeg, l.slotOff, l.slotTime = seg.num, seg.written, time.Now()
		return l.writeSyncedSlot(seg, seg.written)
	}
	return nil
}

const (
	// bufSlack is the room past WriteBehind a buffer starts with, for the
	// record that crosses it.
	bufSlack  = 256 << 10
	slotEvery = 1 << 20
	slotAge   = time.Second
)

// rotate seals segment num (written and fsynced whole) and starts the next.
// syncSealed makes the sealed segments that are not yet durable so, oldest
// first, and records each as synced to its end. The caller holds syncMu.
func (l *Log) syncSealed() error {
	for len(l.unsynced) > 0 {
		seg := l.unsynced[0]
		if err := seg.f.Sync(); err != nil {
			return fmt.Errorf("sync segment %s: %w", segName(seg.num), err)
		}
		if err := l.writeSyncedSlot(seg, seg.written); err != nil {
			return err
		}
		l.unsynced = l.unsynced[1:]
	}
	l.unsynced = nil
	return nil
}

func (l *Log) rotate(num uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active.num != num || l.closed {
		return nil
	}
	seg := l.active
	if len(l.buf) > 0 {
		if err := l.writeAt(seg, l.buf, l.bufOff); err != nil {
			err = fmt.Errorf("journal %q: %w", l.dir, err)
			l.failed = err
			return err
		}
		l.cache.add(seg.num, l.bufOff, l.buf)
		seg.written = l.bufOff + int64(len(l.buf))
		l.writtenSeq = l.bufLastSeq
	}
	// A sealed segment ends with its last record: drop the preallocated
	// rest. It is not fsynced here: a seal would then wait for every dirty
	// page of the segment, stalling all appenders. The next sync makes it
	// durable before the segments after it (writeOut); until then a power
	// cut may tear it, and Open cuts it there and sets aside what follows,
	// none of which was acknowledged (see doc.go).
	if err := seg.f.Truncate(seg.written); err != nil {
		err = fmt.Errorf("journal %q: truncate segment %s: %w", l.dir, segName(seg.num), err)
		l.failed = err
		return err
	}
	l.unsynced = append(l.unsynced, seg)
	if err := l.createSegment(num+1, l.nextSeq); err != nil {
		l.failed = err
		return err
	}
	l.buf = nil
	if l.bufMem != nil {
		l.buf = vfs.AlignedAt(l.bufMem, l.bufOff)
	}
	return nil
}

// growBuf makes room in buf for a record of size bytes: at first the full
// size at once (growing a multi-MiB buffer step by step copies it many
// times over and faults in fresh pages), later for a record larger than
// the slack. buf keeps the file offset's alignment (vfs.AlignedAt). The
// caller holds mu.
func (l *Log) growBuf(size int) {
	n := max(2*l.opts.WriteBehind+bufSlack, len(l.buf)+size) + vfs.DirectAlign
	mem := make([]byte, n)
	buf := vfs.AlignedAt(mem, l.bufOff)
	l.buf = append(buf, l.buf...)
	l.bufMem = mem
}

// directMin is the least page-aligned run of a write that goes to the file
// past the page cache. Smaller writes (a single 4 KiB record and its
// flush) stay buffered: a direct transfer waits for the device.
const directMin = 256 << 10

// writeAt hands data to seg at off. The whole pages in the middle of a
// large write go past the page cache (vfs.DirectIO); the partial pages at
// either end are buffered, so that a page is never written both ways. A
// file system that refuses direct I/O gets buffered writes from then on.
// The caller holds syncMu.
func (l *Log) writeAt(seg *segment, data []byte, off int64) error {
	if len(data) == 0 {
		return nil
	}
	end := off + int64(len(data))
	a := (off + vfs.DirectAlign - 1) &^ (vfs.DirectAlign - 1)
	b := end &^ (vfs.DirectAlign - 1)
	d, ok := seg.f.(vfs.DirectIO)
	if ok && !l.noDirect.Load() && b-a >= directMin && vfs.Aligned(data[a-off:]) {
		_, err := d.WriteDirect(data[a-off:b-off], a)
		if err == nil {
			l.directBytes.Add(b - a)
			if err := l.writeBuffered(seg, data[:a-off], off); err != nil {
				return err
			}
			return l.writeBuffered(seg, data[b-off:], b)
		}
		if !errors.Is(err, vfs.ErrNoDirect) {
			return fmt.Errorf("write segment %s at %d: %w", segName(seg.num), a, err)
		}
		l.refuseDirect(err)
	}
	return l.writeBuffered(seg, data, off)
}

func (l *Log) writeBuffered(seg *segment, data []byte, off int64) error {
	if len(data) == 0 {
		return nil
	}
	if _, err := seg.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write segment %s at %d: %w", segName(seg.num), off, err)
	}
	return nil
}

// ReadData reads len(p) bytes at loc, from the buffer when the bytes have
// not reached the file yet.
func (l *Log) ReadData(loc Loc, p []byte) error {
	l.mu.Lock()
	seg := l.segs[loc.Segment()]
	if seg == nil {
		l.mu.Unlock()
		return fmt.Errorf("journal: read %s: segment %s is not in the log", loc, segName(loc.Segment()))
	}
	off := loc.Offset()
	if seg == l.active && off >= l.bufOff {
		n := copy(p, l.buf[off-l.bufOff:])
		l.mu.Unlock()
		l.readMemory.Add(int64(n))
		if n != len(p) {
			return fmt.Errorf("journal: read %s: %d of %d bytes buffered", loc, n, len(p))
		}
		return nil
	}
	if l.inflightSeg == seg && off >= l.inflightOff {
		n := copy(p, l.inflight[off-l.inflightOff:])
		l.mu.Unlock()
		l.readMemory.Add(int64(n))
		if n != len(p) {
			return fmt.Errorf("journal: read %s: %d of %d bytes in flight", loc, n, len(p))
		}
		return nil
	}
	f := seg.f
	l.mu.Unlock()
	if l.cache.read(seg.num, off, p) {
		l.readMemory.Add(int64(len(p)))
		return nil
	}
	l.readFile.Add(int64(len(p)))
	// Reads of the files use the page cache even where the writes did
	// not: four parallel cold 1 MiB reads through it (and its readahead)
	// measured faster than direct reads here, and hot blocks stay cached.
	if _, err := f.ReadAt(p, off); err != nil {
		return fmt.Errorf("journal: read %s: %w", loc, err)
	}
	return nil
}

// refuseDirect turns direct writes off for the log after the file system
// refused them.
func (l *Log) refuseDirect(err error) {
	if !l.noDirect.Swap(true) {
		l.opts.Logger.Warn("journal: direct I/O refused, using the page cache", "dir", l.dir, "reason", err.Error())
	}
}

// Stats are a log's I/O counters since Open, and its cache.
type Stats struct {
	DirectBytes int64 // written to the files past the page cache
	ReadMemory  int64 // bytes ReadData served from the buffers and the cache
	ReadFile    int64 // bytes ReadData read from the files
	CacheSize   int64 // Options.Cache
	CacheMemory int64 // memory the cache holds so far (at most CacheSize)
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{DirectBytes: l.directBytes.Load(), ReadMemory: l.readMemory.Load(), ReadFile: l.readFile.Load(),
		CacheSize: max(l.opts.Cache, 0), CacheMemory: l.cache.memory()}
}

// ReadRecord reads and verifies the whole record at loc.
func (l *Log) ReadRecord(loc Loc) (*Record, error) {
	var hdr [frameSize]byte
	if err := l.ReadData(loc, hdr[:]); err != nil {
		return nil, err
	}
	n, _, err := frameLen(hdr[:])
	if err != nil {
		return nil, fmt.Errorf("journal: record at %s: %w", loc, err)
	}
	b := make([]byte, frameSize+n)
	if err := l.ReadData(loc, b); err != nil {
		return nil, err
	}
	rec, err := DecodeRecord(b)
	if err != nil {
		return nil, fmt.Errorf("journal: record at %s: %w", loc, err)
	}
	return rec, nil
}

// Segments lists the segments, oldest first.
func (l *Log) Segments() []SegmentInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]SegmentInfo, 0, len(l.order))
	for _, num := range l.order {
		s := l.segs[num]
		size := s.written
		if s == l.active {
			size = l.bufOff + int64(len(l.buf))
		}
		out = append(out, SegmentInfo{Num: num, FirstSeq: s.firstSeq, LastSeq: s.lastSeq, LastTS: s.lastTS, Size: size, Active: s == l.active})
	}
	return out
}

// ScanSegment calls fn for every record of a sealed or active segment, in
// order, reading what has reached the file (call Sync first for the rest).
func (l *Log) ScanSegment(ctx context.Context, num uint64, fn ScanFunc) error {
	l.mu.Lock()
	seg := l.segs[num]
	var written int64
	if seg != nil {
		written = seg.written
	}
	l.mu.Unlock()
	if seg == nil {
		return fmt.Errorf("journal: scan: no segment %s", segName(num))
	}
	b := make([]byte, written)
	if _, err := seg.f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("journal: scan %s: %w", segName(num), err)
	}
	for off := int64(segHeaderSize); off < written; {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := DecodeRecord(b[off:])
		if err != nil {
			return fmt.Errorf("%w: segment %s offset %d: %v", ErrCorrupt, segName(num), off, err)
		}
		if err := fn(rec, MakeLoc(num, off)); err != nil {
			return err
		}
		off += rec.Size()
	}
	return nil
}

// RemoveSegments deletes sealed segments older than num (the caller has
// folded every record in them). The oldest segment left starts the log.
func (l *Log) RemoveSegments(num uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	var drop []*segment
	keep := l.order[:0]
	for _, n := range l.order {
		if n < num && l.segs[n] != l.active {
			drop = append(drop, l.segs[n])
			delete(l.segs, n)
			continue
		}
		keep = append(keep, n)
	}
	l.order = keep
	l.mu.Unlock()
	unsynced := l.unsynced[:0]
	for _, s := range l.unsynced {
		if s.num >= num {
			unsynced = append(unsynced, s)
		}
	}
	l.unsynced = unsynced
	for _, s := range drop {
		s.f.Close()
		if err := l.opts.FS.Remove(segPath(l.dir, s.num)); err != nil {
			return fmt.Errorf("journal: remove %s: %w", segName(s.num), err)
		}
	}
	if len(drop) > 0 {
		if err := l.opts.FS.SyncDir(l.dir); err != nil {
			return fmt.Errorf("journal: sync %q: %w", l.dir, err)
		}
	}
	return nil
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	err := l.SyncAll(context.Background())
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if a := l.active; err == nil && l.failed == nil && a != nil {
		// A cleanly closed log has no preallocated tail, so its files
		// are exactly its records.
		if terr := a.f.Truncate(a.written); terr != nil {
			err = fmt.Errorf("journal %q: truncate segment %s: %w", l.dir, segName(a.num), terr)
		} else if serr := a.f.Sync(); serr != nil {
			err = fmt.Errorf("journal %q: sync segment %s: %w", l.dir, segName(a.num), serr)
		}
	}
	for _, s := range l.segs {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
	}
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	return err
}

func (l *Log) closeFiles() {
	for _, s := range l.segs {
		s.f.Close()
	}
}
