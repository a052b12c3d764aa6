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
	s, err := Open(ctx, benchDir(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	v, _ := s.CreateVolume(ctx, VolumeSpec{Name: "v", Size: 1 << 30, BlockSize: 4096})
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
