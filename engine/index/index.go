// Package index is the point-in-time index of one volume's journal: for a
// block and a time T it finds the newest journal entry for that block with
// TS <= T, within a fixed memory budget.
//
// Structure (LSM-like). New entries go to a memtable (arrival order, with a
// per-block chain for O(log) lookups). A full memtable is sorted by
// (Block, TS) into an immutable run; runs cover contiguous, ordered TS
// ranges, so a lookup searches the memtable and then the runs newest first
// and stops at the first hit. Adjacent runs of similar size are merged
// (binomially), keeping about log2(N/M) runs. Each run has a Bloom filter
// over its blocks, so a run without the block costs one cache line. When
// the in-memory runs exceed their budget, the oldest run is written to a
// spill file and only its page fences (and filter) stay in memory; spill
// files are merged the same way. A lookup that reaches a spill file and
// passes its filter reads one 4 KiB page.
//
// Memory bound (Stats.MemoryBytes counts exactly these, from the sizes of
// the allocations; TestMemoryPerEntry and TestMemoryCap check them against
// the live heap):
//   - an entry in an in-memory run: 24 bytes, plus 8 bytes of search
//     samples per 32 entries and 1 byte of filter: 25.25 bytes;
//   - the memtable, allocated once: 44 bytes per slot of capacity, two of
//     them (the active one and the one being flushed or kept for reuse);
//     capacity = MemoryLimit/(8*44), clamped to [64, 65536], so the two
//     take at most a quarter of the limit (or 5.6 KiB, the floor);
//   - a spilled entry: 1 byte of filter while the filters of spill files
//     fit in a quarter of the limit (beyond it the oldest files lose their
//     filter), plus 16 bytes of fence per 4 KiB page of 170 entries, i.e.
//     0.094 bytes per entry, plus at most 64 16-byte TS summaries per
//     spill file (Stats.FenceBytes counts fences and summaries);
//   - the cap: everything but fences and summaries <= max(MemoryLimit,
//     5.6 KiB) after every Add (unless a spill failed; Add then returns the
//     error). Beyond it the oldest runs spill. Only fences grow with the
//     number of spilled entries (about 94 KiB per million), and
//     DropThrough reclaims them.
//
// With the default 64 MiB limit about 2M entries stay in memory (8 GiB of
// 4 KiB writes); 100M spilled entries cost 9.4 MiB of fences.
//
// A merge needs its output on top of its inputs while it runs, so the heap
// can briefly exceed the cap by the size of the runs being merged.
//
// Concurrency: any number of Lookup, Newest, Changed and Stats calls may run
// concurrently with each other and with one mutator (Add, DropThrough,
// Close); mutators are serialised. Flushes, in-memory merges and spills run
// inside Add (work bounded by MemoryLimit) without blocking readers. Merges
// of spill files, whose cost grows with the journal window, run in a
// background goroutine, so Close must be called.
package index

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Entry locates the data one journal record wrote for one block.
type Entry struct {
	Block uint64 // logical block number
	TS    int64  // the record's timestamp (ns); unique per record
	Loc   uint64 // where the block's data is in the journal
}

// Options configure an Index.
type Options struct {
	// MemoryLimit is the bytes of entries kept in memory; beyond it sorted
	// runs spill to files in Dir. 0 means DefaultMemoryLimit.
	MemoryLimit int64
	// Dir is the spill directory, created if needed. The index owns the
	// files named spill-* in it: they are a cache, deleted at New and Close.
	// Each Index needs a directory of its own.
	Dir string
	// FS is the file system; nil means vfs.OS{}.
	FS vfs.FS
}

// DefaultMemoryLimit is the MemoryLimit used when Options leave it 0.
const DefaultMemoryLimit = 64 << 20

const (
	minMemtable = 64
	maxMemtable = 1 << 16
)

var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("index: closed")
	// ErrOutOfOrder is returned by Add for an entry older than one already
	// added; the index relies on arrival in TS order.
	ErrOutOfOrder = errors.New("index: entry timestamp went backwards")
)

// Stats describe an index's size.
type Stats struct {
	Entries        int64 // retained entries (in memory and spilled)
	MemoryBytes    int64 // bytes held: memtables, in-memory runs, filters, fences, summaries
	FenceBytes     int64 // fences and summaries of spill files: the part past MemoryLimit
	SpilledEntries int64
	SpillFiles     int
	Runs           int // in-memory runs
}

// Index is the point-in-time index of one volume. It is safe for concurrent
// use (see the package comment).
type Index struct {
	fsys      vfs.FS
	dir       string
	limit     int64
	runBudget int64 // bytes the in-memory runs may use

	// Lock order: wmu, then mu.
	wmu    sync.Mutex // serialises mutators and merge publication; guards the fields below
	spare  *memtable
	lastTS int64
	bgErr  error // the last failed background merge, until one succeeds or Add reports it
	merge  merger

	nextID atomic.Uint32
	// idSalt makes file ids differ between indexes, so that a page from
	// another index's file (a shared directory, a misdirected write) fails
	// the id check even when its page number and first key match.
	idSalt uint32

	mu      sync.RWMutex // guards the published state below
	closed  bool
	mem     *memtable
	imm     *memtable // the memtable being turned into a run, still searchable
	runs    []*run    // oldest first; spilled runs precede in-memory ones; replaced, never edited
	dropped int64     // DropThrough's high-water mark
}

// New returns an empty index and clears the spill directory.
func New(opts Options) (*Index, error) {
	if opts.FS == nil {
		opts.FS = vfs.OS{}
	}
	if opts.MemoryLimit == 0 {
		opts.MemoryLimit = DefaultMemoryLimit
	}
	if opts.MemoryLimit < 0 {
		return nil, fmt.Errorf("index: memory limit %d, want >= 0", opts.MemoryLimit)
	}
	if opts.Dir == "" {
		return nil, errors.New("index: no spill directory: set Options.Dir")
	}
	if err := opts.FS.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("index: create spill directory %q: %w", opts.Dir, err)
	}
	names, err := opts.FS.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("index: list spill directory %q: %w", opts.Dir, err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, spillPrefix) {
			p := filepath.Join(opts.Dir, name)
			if err := opts.FS.Remove(p); err != nil {
				return nil, fmt.Errorf("index: remove stale spill file %q: %w", p, err)
			}
		}
	}
	c := int(min(max(opts.MemoryLimit/(8*memtableEntryBytes), minMemtable), maxMemtable))
	x := &Index{
		fsys:    opts.FS,
		dir:     opts.Dir,
		limit:   opts.MemoryLimit,
		mem:     newMemtable(c),
		spare:   newMemtable(c),
		lastTS:  math.MinInt64,
		dropped: math.MinInt64,
		idSalt:  rand.Uint32(),
	}
	x.runBudget = max(x.limit-2*x.mem.bytes(), 0)
	x.merge.start(x)
	return x, nil
}

// Add appends entries. TS must not decrease, within a call and across
// calls (ErrOutOfOrder, and nothing is added). Otherwise entries are
// indexed even when an error is returned: the only other errors are spill
// I/O failures, of this call or of a background merge since the last
// call. A failed spill leaves its run in memory (over the limit) until a
// later spill succeeds; a failed merge leaves its inputs unmerged.
func (x *Index) Add(entries ...Entry) error {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.closed {
		return ErrClosed
	}
	last := x.lastTS
	for _, e := range entries {
		if e.TS < last || e.TS == math.MinInt64 {
			return fmt.Errorf("%w: block %d ts %d after ts %d", ErrOutOfOrder, e.Block, e.TS, last)
		}
		last = e.TS
	}
	x.lastTS = last
	firstErr := x.bgErr
	x.bgErr = nil
	for len(entries) > 0 {
		k := min(x.mem.room(), len(entries))
		x.mu.Lock()
		for _, e := range entries[:k] {
			x.mem.add(e)
		}
		x.mu.Unlock()
		entries = entries[k:]
		if x.mem.room() == 0 {
			if err := x.flush(); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// flush turns the full memtable into a run, then merges and spills.
func (x *Index) flush() error {
	m := x.mem
	x.mu.Lock()
	x.imm, x.mem = m, x.spare
	x.mu.Unlock()
	x.spare = nil

	r := buildRun(m.ents, x.dropped)
	x.mu.Lock()
	x.imm = nil
	if r != nil {
		x.runs = append(x.runs[:len(x.runs):len(x.runs)], r)
	}
	x.mu.Unlock()
	// No reader can still see m: they look under the read lock.
	m.reset()
	x.spare = m
	return x.compact()
}

// replace publishes runs[i:j] := with (nil entries are skipped) and releases
// the spill files of the replaced runs.
func (x *Index) replace(i, j int, with ...*run) error {
	next := make([]*run, 0, len(x.runs)-(j-i)+len(with))
	next = append(next, x.runs[:i]...)
	for _, r := range with {
		if r != nil {
			next = append(next, r)
		}
	}
	next = append(next, x.runs[j:]...)
	old := x.runs[i:j]
	x.mu.Lock()
	x.runs = next
	x.mu.Unlock()
	var firstErr error
	for _, r := range old {
		if r.file != nil {
			if err := r.file.release(); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// firstMem is the index of the oldest in-memory run.
func (x *Index) firstMem() int {
	i := 0
	for i < len(x.runs) && x.runs[i].file != nil {
		i++
	}
	return i
}

// compact merges the newest in-memory runs while the newest has caught up
// with the one before it, then spills the oldest in-memory runs while they
// exceed their budget.
func (x *Index) compact() error {
	for {
		k, f := len(x.runs), x.firstMem()
		if k-f < 2 || x.runs[k-2].n > x.runs[k-1].n {
			break
		}
		r := mergeMem(x.runs[k-2], x.runs[k-1], x.dropped)
		if err := x.replace(k-2, k, r); err != nil {
			return err
		}
	}
	for {
		x.trimFilters()
		f := x.firstMem()
		var inMem, filters int64
		for _, r := range x.runs[f:] {
			inMem += r.memBytes()
		}
		for _, r := range x.runs[:f] {
			filters += r.filter.Load().bytes()
		}
		if inMem <= x.runBudget-filters || f == len(x.runs) {
			return nil
		}
		s, err := x.writeSpill(x.runs[f].iter(), x.dropped)
		if err != nil {
			return err
		}
		r := x.runs[f]
		var sr *run
		if s != nil {
			sr = &run{minTS: r.minTS, maxTS: r.maxTS, n: s.n, file: s,
				parts: adjustParts(append([]part(nil), r.parts...), x.dropped, r.n-s.n, s.n)}
			sr.filter.Store(r.filter.Load())
		}
		if err := x.replace(f, f+1, sr); err != nil {
			return err
		}
		x.merge.kick()
	}
}

// trimFilters keeps the filters of spilled runs within a quarter of the
// limit, and within what the in-memory runs leave of their budget; the
// oldest (largest) runs lose theirs first and then cost a page read for
// every lookup that reaches them.
func (x *Index) trimFilters() {
	f := x.firstMem()
	var inMem int64
	for _, r := range x.runs[f:] {
		inMem += r.memBytes()
	}
	budget := min(x.limit/4, max(x.runBudget-inMem, 0))
	var total int64
	for i := f - 1; i >= 0; i-- {
		r := x.runs[i]
		b := r.filter.Load().bytes()
		if total+b > budget {
			r.filter.Store(nil)
			continue
		}
		total += b
	}
}

func (x *Index) newSpillWriter() (*spillWriter, error) {
	return createSpill(x.fsys, x.dir, x.idSalt+x.nextID.Add(1))
}

// writeSpill writes the entries of it with TS > dropped to a new spill file.
func (x *Index) writeSpill(it iter, dropped int64) (*spillFile, error) {
	w, err := x.newSpillWriter()
	if err != nil {
		return nil, err
	}
	for {
		e, ok, err := it.next()
		if err != nil {
			w.abort()
			return nil, err
		}
		if !ok {
			break
		}
		if e.TS > dropped {
			w.add(e)
		}
	}
	return w.finish()
}

// Lookup returns the newest entry for block with TS <= at. After
// DropThrough(F), an entry with TS <= F is never returned: if the newest
// entry <= at has TS <= F, the result is not found (read the base image).
func (x *Index) Lookup(block uint64, at int64) (Entry, bool, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.closed {
		return Entry{}, false, ErrClosed
	}
	if at <= x.dropped {
		return Entry{}, false, nil
	}
	e, ok := x.mem.lookup(block, at)
	if !ok && x.imm != nil {
		e, ok = x.imm.lookup(block, at)
	}
	for i := len(x.runs) - 1; !ok && i >= 0; i-- {
		r := x.runs[i]
		if r.maxTS <= x.dropped {
			break
		}
		if r.minTS > at {
			continue
		}
		var err error
		if e, ok, err = r.lookup(block, at); err != nil {
			return Entry{}, false, err
		}
	}
	if !ok || e.TS <= x.dropped {
		return Entry{}, false, nil
	}
	return e, true, nil
}

// Newest returns the newest entry for block (the current state).
func (x *Index) Newest(block uint64) (Entry, bool, error) {
	return x.Lookup(block, math.MaxInt64)
}

// Changed calls fn for every entry with from < TS <= to, in no particular
// order, until fn returns false. After DropThrough(F) only entries with
// TS > F are reported. fn may call the index's read methods, not Add.
func (x *Index) Changed(from, to int64, fn func(Entry) bool) error {
	x.mu.RLock()
	if x.closed {
		x.mu.RUnlock()
		return ErrClosed
	}
	from = max(from, x.dropped)
	if from >= to {
		x.mu.RUnlock()
		return nil
	}
	// Copy the memtables' matches: fn must not run under the read lock
	// (it may call Lookup, and a waiting writer would deadlock it).
	recent := x.mem.appendRange(nil, from, to)
	if x.imm != nil {
		recent = x.imm.appendRange(recent, from, to)
	}
	var runs []*run
	for _, r := range x.runs {
		if r.maxTS > from && r.minTS <= to {
			if r.file != nil {
				r.file.acquire()
			}
			runs = append(runs, r)
		}
	}
	x.mu.RUnlock()
	defer func() {
		for _, r := range runs {
			if r.file != nil {
				r.file.release()
			}
		}
	}()

	for _, e := range recent {
		if !fn(e) {
			return nil
		}
	}
	for i := len(runs) - 1; i >= 0; i-- {
		it := runs[i].iter()
		for {
			e, ok, err := it.next()
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			if e.TS > from && e.TS <= to && !fn(e) {
				return nil
			}
		}
	}
	return nil
}

// DropThrough declares every entry with TS <= ts represented by the base
// image. Runs wholly <= ts are freed at once; the one run straddling ts is
// rewritten without those entries when that frees at least a quarter of it.
// Memtable entries <= ts are left out when the memtable is flushed.
func (x *Index) DropThrough(ts int64) error {
	x.wmu.Lock()
	defer x.wmu.Unlock()
	if x.closed {
		return ErrClosed
	}
	if ts <= x.dropped {
		return nil
	}
	x.mu.Lock()
	x.dropped = ts
	x.mu.Unlock()

	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for i := 0; i < len(x.runs); {
		r := x.runs[i]
		switch {
		case r.maxTS <= ts:
			note(x.replace(i, i+1))
			continue
		case r.minTS <= ts:
			nr, err := x.rewrite(r, ts)
			note(err)
			if err == nil && nr != r {
				note(x.replace(i, i+1, nr))
				if nr == nil {
					continue
				}
			}
		}
		i++
	}
	return firstErr
}

// rewrite returns r without the entries <= ts, or r itself when that would
// free less than a quarter of it.
func (x *Index) rewrite(r *run, ts int64) (*run, error) {
	var gone int
	if r.file == nil {
		gone = r.n - countAfter(r.ents, ts)
	} else {
		gone = r.estimateThrough(ts)
	}
	if gone*4 < r.n {
		return r, nil
	}
	if r.file == nil {
		n := r.n - gone
		if n == 0 {
			return nil, nil
		}
		ents := make([]Entry, 0, n)
		for _, e := range r.ents {
			if e.TS > ts {
				ents = append(ents, e)
			}
		}
		return newMemRun(ents, ts+1, r.maxTS, adjustParts(append([]part(nil), r.parts...), ts, gone, n), r.filter.Load()), nil
	}
	s, err := x.writeSpill(r.iter(), ts)
	if err != nil || s == nil {
		return nil, err
	}
	n := s.n
	nr := &run{minTS: ts + 1, maxTS: r.maxTS, n: n, file: s,
		parts: adjustParts(append([]part(nil), r.parts...), ts, r.n-n, n)}
	nr.filter.Store(r.filter.Load())
	return nr, nil
}

// Stats reports the index's size.
func (x *Index) Stats() Stats {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var st Stats
	if x.closed {
		return st
	}
	st.Entries = int64(len(x.mem.ents))
	st.MemoryBytes = x.mem.bytes()
	if x.imm != nil {
		st.Entries += int64(len(x.imm.ents))
		st.MemoryBytes += x.imm.bytes()
	} else {
		// The spare memtable is held for reuse (the writer fields are not
		// guarded by mu, but the spare always exists when imm is nil).
		st.MemoryBytes += x.mem.bytes()
	}
	for _, r := range x.runs {
		st.Entries += int64(r.n)
		st.MemoryBytes += r.memBytes()
		st.FenceBytes += r.fenceBytes()
		if r.file != nil {
			st.SpilledEntries += int64(r.n)
			st.SpillFiles++
		} else {
			st.Runs++
		}
	}
	return st
}

// Close releases memory and deletes the spill files (those still being
// read by Changed go when it returns). It waits for a background merge to
// stop.
func (x *Index) Close() error {
	x.wmu.Lock()
	if x.closed {
		x.wmu.Unlock()
		return ErrClosed
	}
	runs := x.runs
	x.mu.Lock()
	x.closed = true
	x.runs, x.mem, x.imm = nil, nil, nil
	x.mu.Unlock()
	x.spare = nil
	x.wmu.Unlock()
	x.merge.stop()
	var firstErr error
	for _, r := range runs {
		if r.file != nil {
			if err := r.file.release(); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}
