package bufpool

import "testing"

func TestGetPut(t *testing.T) {
	for _, n := range []int{1, 512, 513, 4096, 4100, 1 << 20, 1<<20 + 1} {
		b := Get(n)
		if len(b) != n {
			t.Fatalf("Get(%d): len %d", n, len(b))
		}
		if n <= 1<<maxShift && (cap(b) < n || cap(b)&(cap(b)-1) != 0) {
			t.Fatalf("Get(%d): cap %d, want a power of two >= n", n, cap(b))
		}
		Put(b)
		if c := Get(n); len(c) != n || cap(c) < n {
			t.Fatalf("Get(%d) after Put: len %d cap %d", n, len(c), cap(c))
		}
	}
	Put(make([]byte, 3000)) // not from the pool: ignored
	Put(nil)
}

func BenchmarkGetPut4K(b *testing.B) {
	for range b.N {
		Put(Get(4096))
	}
}
