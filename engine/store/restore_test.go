package store

import (
	"context"
	"errors"
	"testing"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

// A marker naming a fenced volume would record a point in the middle of a
// roll; Mark refuses it, and accepts it again once the fence is lifted.
func TestMarkRefusesFencedVolume(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "/d", Options{FS: vfs.NewCrashFS()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var vols []*Volume
	for _, n := range []string{"svc/a", "svc/b"} {
		v, err := s.CreateVolume(ctx, VolumeSpec{Name: n, Size: 1 << 20, BlockSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		vols = append(vols, v)
	}
	spec := MarkSpec{Service: "svc", Class: ClassCrash, Volumes: []string{"svc/a", "svc/b"}}
	vols[1].SetFenced(true)
	if !vols[1].Fenced() {
		t.Fatal("Fenced() false after SetFenced(true)")
	}
	if _, err := s.Mark(ctx, spec); !errors.Is(err, blockdev.ErrFenced) {
		t.Fatalf("Mark on a fenced volume: %v, want ErrFenced", err)
	}
	if n := len(s.Markers("svc")); n != 0 {
		t.Fatalf("%d markers recorded by a refused Mark", n)
	}
	vols[1].SetFenced(false)
	if _, err := s.Mark(ctx, spec); err != nil {
		t.Fatalf("Mark after unfence: %v", err)
	}
	if n := len(s.Markers("svc")); n != 1 {
		t.Fatalf("%d markers, want 1", n)
	}
}
