package index

// bloom is a blocked Bloom filter over block numbers: every key sets
// bloomProbes bits inside one 64-byte block, so a query costs one cache
// line. At 8 bits per key about 2% of the queries for absent blocks pass.
// A filter built for a set stays valid for any subset, so runs that lose
// entries (drops, spills) keep their filter. A nil filter passes everything.
type bloom struct {
	words   []uint64
	nblocks uint64
}

const (
	bloomBitsPerKey = 8
	bloomProbes     = 5
	bloomBlockWords = 8 // 512 bits
)

func newBloom(keys int) *bloom {
	nb := max(1, (keys*bloomBitsPerKey+511)/512)
	return &bloom{words: make([]uint64, nb*bloomBlockWords), nblocks: uint64(nb)}
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (f *bloom) locate(b uint64) (base uint64, bits uint64) {
	h := mix64(b)
	return ((h >> 32) * f.nblocks >> 32) * bloomBlockWords, mix64(h ^ 0x9e3779b97f4a7c15)
}

func (f *bloom) add(b uint64) {
	base, h := f.locate(b)
	for range bloomProbes {
		bit := h & 511
		f.words[base+bit>>6] |= 1 << (bit & 63)
		h >>= 9
	}
}

func (f *bloom) mayContain(b uint64) bool {
	if f == nil {
		return true
	}
	base, h := f.locate(b)
	for range bloomProbes {
		bit := h & 511
		if f.words[base+bit>>6]&(1<<(bit&63)) == 0 {
			return false
		}
		h >>= 9
	}
	return true
}

func (f *bloom) bytes() int64 {
	if f == nil {
		return 0
	}
	return int64(cap(f.words)) * 8
}

// bloomOf builds the filter of sorted ents.
func bloomOf(ents []Entry) *bloom {
	f := newBloom(len(ents))
	for i := range ents {
		if i == 0 || ents[i].Block != ents[i-1].Block {
			f.add(ents[i].Block)
		}
	}
	return f
}
