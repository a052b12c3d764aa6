package iscsiconf

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// TestQemuMapJournaled: qemu-img map over iSCSI (GET LBA STATUS, what
// qemu-img convert and qemu's mirror and backup jobs use to skip holes)
// shows a journaled volume's data where qemu-io wrote it and zeros where
// nothing was written or it was zeroed or unmapped; a clone, whose blocks
// fall through to its parent, maps the same way.
func TestQemuMapJournaled(t *testing.T) {
	qimg := testenv.LookPath(t, "qemu-img")
	qio := testenv.LookPath(t, "qemu-io")
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := store.Open(ctx, t.TempDir(), store.Options{})
	must(err)
	defer s.Close()
	const size = 64 << 20
	v, err := s.CreateVolume(ctx, store.VolumeSpec{Name: "map", Size: size, BlockSize: 4096})
	must(err)
	srv := iscsi.NewServer(iscsi.ServerConfig{})
	must(srv.AddTarget(iscsi.TargetConfig{IQN: iqn + "-map", LUNs: []iscsi.LUNConfig{{Device: v}}}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go srv.Serve(ctx, l)
	defer srv.Close()
	url := func(name string) string { return fmt.Sprintf("iscsi://%s/%s-%s/0", l.Addr(), iqn, name) }

	// Through the initiator: data, WRITE SAME of zeros over part of it,
	// more data, and an UNMAP of the last.
	out, err := run(time.Minute, qio, "-f", "raw", "-c", "write -P 0x5c 1M 256k", "-c", "write -z 1M 64k",
		"-c", "write -P 0x11 8M 4k", "-c", "write -P 0x22 9M 64k", "-c", "discard 9M 64k", url("map"))
	if err != nil {
		if strings.Contains(out, "Unknown protocol") {
			testenv.Unavailable(t, "qemu's iscsi driver (qemu-block-extra): %s", out)
		}
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	c, err := s.Clone(ctx, "map", s.Journal().LastTS(), "map-clone")
	must(err)
	must(srv.AddTarget(iscsi.TargetConfig{IQN: iqn + "-clone", LUNs: []iscsi.LUNConfig{{Device: c}}}))

	want := fmt.Sprint([][2]int64{{1<<20 + 64<<10, 192 << 10}, {8 << 20, 4 << 10}})
	for _, name := range []string{"map", "clone"} {
		out, err := run(time.Minute, qimg, "map", "--output=json", "-f", "raw", url(name))
		if err != nil {
			t.Fatalf("qemu-img map %s: %v\n%s", name, err, out)
		}
		if got := dataExtents(t, out, size); got != want {
			t.Fatalf("qemu-img map %s: data extents %s, want %s\n%s", name, got, want, out)
		}
	}
}

// dataExtents parses qemu-img map's JSON and returns its data extents.
func dataExtents(t *testing.T, out string, size int64) string {
	t.Helper()
	var extents []struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
		Zero   bool  `json:"zero"`
	}
	i := strings.Index(out, "[")
	if i < 0 {
		t.Fatalf("qemu-img map: no JSON in\n%s", out)
	}
	if err := json.Unmarshal([]byte(out[i:]), &extents); err != nil {
		t.Fatalf("qemu-img map output: %v\n%s", err, out)
	}
	var data [][2]int64
	end := int64(0)
	for _, e := range extents {
		if e.Start != end || e.Data == e.Zero {
			t.Fatalf("qemu-img map: extent %+v after %d\n%s", e, end, out)
		}
		end = e.Start + e.Length
		if e.Data {
			data = append(data, [2]int64{e.Start, e.Length})
		}
	}
	if end != size {
		t.Fatalf("qemu-img map ends at %d, want %d\n%s", end, size, out)
	}
	return fmt.Sprint(data)
}
