package store

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/lockstep-io/lockstep/engine/blockdev"
)

// TestProvisioning: the index tells written blocks (mapped) from unmapped
// and zeroed ones (deallocated); what the base image holds is left to the
// caller to read (unknown), now and at an earlier point through a view.
func TestProvisioning(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const bs = 4096
	v, err := s.CreateVolume(ctx, VolumeSpec{Name: "v", Size: 64 * bs, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, bytes.Repeat([]byte{7}, 10*bs), 10*bs, false); err != nil {
		t.Fatal(err)
	}
	before := s.log.LastTS()
	if err := v.WriteZeroes(ctx, 30*bs, 10*bs, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Unmap(ctx, 15*bs, bs); err != nil {
		t.Fatal(err)
	}
	walk := func(p blockdev.Provisioner) string {
		var out string
		for b := int64(0); b < 64; {
			state, n, err := p.Provisioning(ctx, b*bs, (64-b)*bs)
			if err != nil {
				t.Fatal(err)
			}
			out += fmt.Sprintf("%d+%d:%d ", b, n/bs, state)
			b += n / bs
		}
		return out
	}
	u, m, d := blockdev.Unknown, blockdev.Mapped, blockdev.Deallocated
	want := fmt.Sprintf("0+10:%d 10+5:%d 15+1:%d 16+4:%d 20+10:%d 30+10:%d 40+24:%d ", u, m, d, m, u, d, u)
	if got := walk(v); got != want {
		t.Fatalf("now: %s, want %s", got, want)
	}
	w, err := v.View(ctx, before)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want = fmt.Sprintf("0+10:%d 10+10:%d 20+44:%d ", u, m, u)
	if got := walk(w); got != want {
		t.Fatalf("view before the zeroing and the unmap: %s, want %s", got, want)
	}
	if _, _, err := v.Provisioning(ctx, 60*bs, 8*bs); err == nil {
		t.Fatal("provisioning past the end: no error")
	}
	v.SetFenced(true)
	if _, _, err := v.Provisioning(ctx, 0, bs); err == nil {
		t.Fatal("provisioning of a fenced volume: no error")
	}
}
