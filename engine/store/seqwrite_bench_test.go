package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSeqWrite1M: 1 MiB sequential writes to a 1 GiB volume, no
// flush, as a file copy or qemu-img bench -s 1M does.
func BenchmarkSeqWrite1M(b *testing.B) {
	ctx := context.Background()
	_, v := benchVolume(b, "v", 1<<30)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := v.WriteAt(ctx, buf, int64(i%1024)<<20, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawSeqWrite1M is its baseline: the same writes to a plain file.
func BenchmarkRawSeqWrite1M(b *testing.B) {
	f, err := os.Create(filepath.Join(benchDir(b), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.WriteAt(buf, int64(i%1024)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// benchVolume opens a store in benchDir with one volume of 4096-byte
// blocks, closed when the benchmark ends.
func benchVolume(b *testing.B, name string, size int64) (*Store, *Volume) {
	ctx := context.Background()
	s, err := Open(ctx, benchDir(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	v, err := s.CreateVolume(ctx, VolumeSpec{Name: name, Size: size, BlockSize: 4096})
	if err != nil {
		b.Fatal(err)
	}
	return s, v
}
