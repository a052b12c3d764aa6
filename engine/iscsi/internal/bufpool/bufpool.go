// Package bufpool recycles the data buffers of iSCSI commands (PDU data
// segments, write data), so a stream of small writes does not allocate and
// zero a fresh buffer per command.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 9  // 512 bytes
	maxShift = 20 // 1 MiB; larger buffers are left to the garbage collector
)

var pools [maxShift - minShift + 1]sync.Pool

func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer of length n. Its content is undefined: callers
// overwrite it completely or clear what they do not.
func Get(n int) []byte {
	c := class(n)
	if c >= len(pools) {
		return make([]byte, n)
	}
	if b, ok := pools[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(c+minShift))
}

// Put recycles b. The caller must not use b (or any slice of it) again.
func Put(b []byte) {
	c := cap(b)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return // not one of ours
	}
	b = b[:0]
	pools[class(c)].Put(&b)
}
