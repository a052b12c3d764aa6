package daemon

import (
	"context"
	"testing"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/store"
)

// The counting wrapper the daemon hands the target must not hide the
// volume's optional capabilities: GET LBA STATUS from the journal's index
// (else every hole is read) and WRITE ATOMIC.
func TestCountingDeviceKeepsCapabilities(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.CreateVolume(ctx, store.VolumeSpec{Name: "db", Size: 1 << 20, BlockSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, make([]byte, 8192), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Unmap(ctx, 8192, 16384); err != nil {
		t.Fatal(err)
	}
	var dev blockdev.Device = &countingDevice{Device: v, c: &ioCounters{}}
	p, ok := dev.(blockdev.Provisioner)
	if !ok {
		t.Fatal("the counting device is no blockdev.Provisioner")
	}
	if got, n, err := p.Provisioning(ctx, 0, 1<<20); err != nil || got != blockdev.Mapped || n != 8192 {
		t.Fatalf("Provisioning of the written start: %v %d %v, want Mapped 8192", got, n, err)
	}
	if got, n, err := p.Provisioning(ctx, 8192, 1<<20-8192); err != nil || got != blockdev.Deallocated || n != 16384 {
		t.Fatalf("Provisioning of the unmapped range: %v %d %v, want Deallocated 16384", got, n, err)
	}
	a, ok := dev.(blockdev.AtomicWriter)
	if !ok || a.AtomicWriteMax() != v.AtomicWriteMax() || a.AtomicWriteMax() == 0 {
		t.Fatalf("the counting device hides the volume's atomic writes (%v)", ok)
	}
}
