package index

import "sync/atomic"

// run is an immutable sorted run covering a contiguous TS range: its entries
// ascend by (Block, TS), held in memory (ents) or in a spill file (file).
type run struct {
	minTS, maxTS int64
	n            int
	parts        []part
	ents         []Entry
	samples      []uint64              // Block of every sampleEvery-th entry of ents
	filter       atomic.Pointer[bloom] // nil once a spilled run's filter was evicted
	file         *spillFile
}

// A lookup first searches the samples (small enough to stay in cache), then
// a few cache lines of ents, instead of ~log2(n) cache misses across ents.
// Cost: 8 bytes per sampleEvery entries.
const sampleEvery = 32

// part summarises the TS distribution of a run, so that DropThrough can tell
// cheaply how much of a spilled run a rewrite would free: roughly cum
// entries of the run have TS <= maxTS.
type part struct {
	maxTS int64
	cum   int
}

const (
	partsPerFlush = 16
	maxParts      = 64
	partBytes     = 16
)

func (r *run) memBytes() int64 {
	b := int64(cap(r.ents))*entrySize + int64(cap(r.samples))*8 + int64(cap(r.parts))*partBytes + r.filter.Load().bytes()
	if r.file != nil {
		b += r.file.memBytes()
	}
	return b
}

func (r *run) fenceBytes() int64 {
	if r.file == nil {
		return 0
	}
	return r.file.memBytes() + int64(cap(r.parts))*partBytes
}

// estimateThrough is a lower bound of the entries with TS <= ts.
func (r *run) estimateThrough(ts int64) int {
	c := 0
	for _, p := range r.parts {
		if p.maxTS <= ts {
			c = p.cum
		}
	}
	return c
}

func (r *run) lookup(b uint64, at int64) (Entry, bool, error) {
	if !r.filter.Load().mayContain(b) {
		return Entry{}, false, nil
	}
	if r.file != nil {
		return r.file.lookup(b, at)
	}
	// Entries before index lo*sampleEvery have Block < b, those from
	// hi*sampleEvery on have Block > b.
	s := r.samples
	lo, hi := 0, len(s)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if s[mid] < b {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	hi = lo
	for hi < len(s) && s[hi] == b {
		hi++
	}
	start, end := max(lo-1, 0)*sampleEvery, min(hi*sampleEvery, len(r.ents))
	e, ok := searchEnts(r.ents[start:end], b, at)
	return e, ok, nil
}

// newMemRun wraps sorted ents as an in-memory run and builds its samples,
// and its filter unless given one (of a superset).
func newMemRun(ents []Entry, minTS, maxTS int64, parts []part, filter *bloom) *run {
	s := make([]uint64, (len(ents)+sampleEvery-1)/sampleEvery)
	for i := range s {
		s[i] = ents[i*sampleEvery].Block
	}
	if filter == nil {
		filter = bloomOf(ents)
	}
	r := &run{minTS: minTS, maxTS: maxTS, n: len(ents), ents: ents, samples: s, parts: parts}
	r.filter.Store(filter)
	return r
}

// searchEnts returns the last entry of sorted ents with key <= (b, at) if
// it belongs to block b.
func searchEnts(ents []Entry, b uint64, at int64) (Entry, bool) {
	lo, hi := 0, len(ents)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		e := &ents[mid]
		if e.Block < b || (e.Block == b && e.TS <= at) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo > 0 && ents[lo-1].Block == b {
		return ents[lo-1], true
	}
	return Entry{}, false
}

// buildRun sorts the entries of TS-ordered src with TS > dropped into a new
// in-memory run; nil if none is left.
func buildRun(src []Entry, dropped int64) *run {
	src = src[searchTS(src, dropped):]
	if len(src) == 0 {
		return nil
	}
	ents := make([]Entry, len(src))
	copy(ents, src)
	sortEntries(ents)
	parts := make([]part, 0, partsPerFlush)
	for k := 1; k <= partsPerFlush; k++ {
		i := k * len(src) / partsPerFlush
		if i > 0 && (len(parts) == 0 || parts[len(parts)-1].cum != i) {
			parts = append(parts, part{src[i-1].TS, i})
		}
	}
	return newMemRun(ents, src[0].TS, src[len(src)-1].TS, exactCopy(parts), nil)
}

func exactCopy[T any](s []T) []T {
	out := make([]T, len(s))
	copy(out, s)
	return out
}

// mergedParts combines the summaries of adjacent runs a (older) and b after
// removed entries with TS <= dropped were left out of the merge.
func mergedParts(a, b *run, dropped int64, removed, n int) []part {
	all := make([]part, 0, len(a.parts)+len(b.parts))
	for _, p := range a.parts {
		all = append(all, p)
	}
	for _, p := range b.parts {
		all = append(all, part{p.maxTS, p.cum + a.n})
	}
	return adjustParts(all, dropped, removed, n)
}

// adjustParts drops parts wholly <= dropped, shifts counts by removed, and
// thins the summary to at most maxParts.
func adjustParts(all []part, dropped int64, removed, n int) []part {
	kept := all[:0]
	for _, p := range all {
		if p.maxTS <= dropped {
			continue
		}
		p.cum = min(max(p.cum-removed, 0), n)
		kept = append(kept, p)
	}
	for len(kept) > maxParts {
		// Keep every other part, always the last one.
		thin := kept[:0]
		for i := len(kept) % 2; i < len(kept); i += 2 {
			thin = append(thin, kept[i])
		}
		kept = thin
	}
	if len(kept) > 0 {
		kept[len(kept)-1].cum = n
	}
	return exactCopy(kept)
}

// iter streams a run's entries in key order.
type iter interface {
	next() (Entry, bool, error)
}

type memIter struct {
	ents []Entry
	i    int
}

func (m *memIter) next() (Entry, bool, error) {
	if m.i == len(m.ents) {
		return Entry{}, false, nil
	}
	m.i++
	return m.ents[m.i-1], true, nil
}

func (r *run) iter() iter {
	if r.file != nil {
		return newSpillReader(r.file)
	}
	return &memIter{ents: r.ents}
}

// merge streams the union of sorted a (older) and b into emit, leaving out
// entries with TS <= dropped; it returns how many it left out.
func merge(a, b iter, dropped int64, emit func(Entry)) (int, error) {
	removed := 0
	ea, oka, err := a.next()
	if err != nil {
		return 0, err
	}
	eb, okb, err := b.next()
	if err != nil {
		return 0, err
	}
	for oka || okb {
		var e Entry
		// On equal keys the older run's entry goes first, so the newer one
		// is the predecessor a lookup finds.
		if oka && (!okb || ea.Block < eb.Block || ea.Block == eb.Block && ea.TS <= eb.TS) {
			e = ea
			if ea, oka, err = a.next(); err != nil {
				return 0, err
			}
		} else {
			e = eb
			if eb, okb, err = b.next(); err != nil {
				return 0, err
			}
		}
		if e.TS <= dropped {
			removed++
			continue
		}
		emit(e)
	}
	return removed, nil
}

// countAfter counts the entries of an in-memory run with TS > ts.
func countAfter(ents []Entry, ts int64) int {
	c := 0
	for i := range ents {
		if ents[i].TS > ts {
			c++
		}
	}
	return c
}

// mergeMem merges adjacent in-memory runs a (older) and b.
func mergeMem(a, b *run, dropped int64) *run {
	n := a.n + b.n
	if dropped >= a.minTS {
		n = countAfter(a.ents, dropped) + countAfter(b.ents, dropped)
	}
	if n == 0 {
		return nil
	}
	ents := make([]Entry, n)
	i, j, k := 0, 0, 0
	for i < len(a.ents) || j < len(b.ents) {
		var e Entry
		if j == len(b.ents) || i < len(a.ents) && (a.ents[i].Block < b.ents[j].Block ||
			a.ents[i].Block == b.ents[j].Block && a.ents[i].TS <= b.ents[j].TS) {
			e = a.ents[i]
			i++
		} else {
			e = b.ents[j]
			j++
		}
		if e.TS > dropped {
			ents[k] = e
			k++
		}
	}
	removed := a.n + b.n - n
	return newMemRun(ents, max(a.minTS, dropped+1), b.maxTS, mergedParts(a, b, dropped, removed, n), nil)
}
