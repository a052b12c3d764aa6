package index

// memtable holds the newest entries in arrival (TS) order. Per block, the
// entries form a chain from newest to oldest; each node also keeps a jump
// pointer (Myers' skew-binary scheme), so finding the newest entry with
// TS <= at costs O(log chain length) even for a block written thousands of
// times since the last flush. The block -> newest entry map is a fixed-size
// open-addressing table, so the memtable's memory is allocated once and known
// exactly.
type memtable struct {
	ents   []Entry // cap is the memtable capacity; TS non-decreasing
	parent []int32 // previous entry of the same block, -1 at the chain's end
	jump   []int32 // an older entry of the same block (itself at the chain's end)
	depth  []int32 // chain position, 0 at the chain's end
	slots  []int32 // entry index+1 of the newest entry of a block; 0 = empty
	shift  uint
}

// memtableEntryBytes is the memory a memtable needs per entry of capacity:
// the entry, three int32 chain fields and two int32 hash slots.
const memtableEntryBytes = entrySize + 3*4 + 2*4

func newMemtable(capacity int) *memtable {
	nslots, bits := 1, uint(0)
	for nslots < 2*capacity {
		nslots <<= 1
		bits++
	}
	return &memtable{
		ents:   make([]Entry, 0, capacity),
		parent: make([]int32, 0, capacity),
		jump:   make([]int32, 0, capacity),
		depth:  make([]int32, 0, capacity),
		slots:  make([]int32, nslots),
		shift:  64 - bits,
	}
}

// bytes is the memory held by the memtable, whether filled or not.
func (m *memtable) bytes() int64 {
	return int64(cap(m.ents))*entrySize +
		int64(cap(m.parent)+cap(m.jump)+cap(m.depth)+cap(m.slots))*4
}

func (m *memtable) room() int { return cap(m.ents) - len(m.ents) }

func (m *memtable) reset() {
	m.ents = m.ents[:0]
	m.parent = m.parent[:0]
	m.jump = m.jump[:0]
	m.depth = m.depth[:0]
	clear(m.slots)
}

// slot returns the hash slot of block b: the one holding b, or the empty
// one where b would go. The table is at most half full, so probes are short.
func (m *memtable) slot(b uint64) int {
	mask := len(m.slots) - 1
	h := int((b * 0x9E3779B97F4A7C15) >> m.shift)
	for {
		s := m.slots[h]
		if s == 0 || m.ents[s-1].Block == b {
			return h
		}
		h = (h + 1) & mask
	}
}

// add appends e; the caller guarantees room() > 0.
func (m *memtable) add(e Entry) {
	i := int32(len(m.ents))
	m.ents = append(m.ents, e)
	h := m.slot(e.Block)
	p := m.slots[h] - 1
	j, d := i, int32(0)
	if p >= 0 {
		d = m.depth[p] + 1
		jp := m.jump[p]
		if m.depth[p]-m.depth[jp] == m.depth[jp]-m.depth[m.jump[jp]] {
			j = m.jump[jp]
		} else {
			j = p
		}
	}
	m.parent = append(m.parent, p)
	m.jump = append(m.jump, j)
	m.depth = append(m.depth, d)
	m.slots[h] = i + 1
}

// lookup returns the newest entry of block b with TS <= at.
func (m *memtable) lookup(b uint64, at int64) (Entry, bool) {
	if len(m.ents) == 0 || m.ents[0].TS > at {
		return Entry{}, false
	}
	x := m.slots[m.slot(b)] - 1
	for x >= 0 && m.ents[x].TS > at {
		// TS decreases along the chain, so skipping to a jump target that
		// is still too new cannot pass over the answer.
		if j := m.jump[x]; j != x && m.ents[j].TS > at {
			x = j
		} else {
			x = m.parent[x]
		}
	}
	if x < 0 {
		return Entry{}, false
	}
	return m.ents[x], true
}

// appendRange appends the entries with from < TS <= to to dst.
func (m *memtable) appendRange(dst []Entry, from, to int64) []Entry {
	i := searchTS(m.ents, from)
	for ; i < len(m.ents) && m.ents[i].TS <= to; i++ {
		dst = append(dst, m.ents[i])
	}
	return dst
}

// searchTS returns the index of the first entry of TS-ordered ents with
// TS > ts.
func searchTS(ents []Entry, ts int64) int {
	lo, hi := 0, len(ents)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if ents[mid].TS <= ts {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}
