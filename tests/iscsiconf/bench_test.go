package iscsiconf

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi"
	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/internal/testenv"
)

// BenchmarkQemuWrite4K drives 4 KiB (and 1 MiB) writes from qemu-img bench (libiscsi,
// the initiator of scripts/bench-iscsi.sh) into an in-process target, so
// that `go test -cpuprofile` shows where the target spends its time. The
// journaled volume is compared with the in-memory disk to separate the
// journal's cost from the protocol's.
func BenchmarkQemuWrite4K(b *testing.B) {
	qemuImg := testenv.LookPath(b, "qemu-img")
	const size = 1 << 30
	for _, tc := range []struct {
		name  string
		args  []string
		store bool
		// prefill writes this many scattered 4 KiB blocks at QD16 first:
		// a volume with some history, as in scripts/bench-iscsi.sh.
		prefill int
		spin    time.Duration // ServerConfig.PollSpin; -1 never polls
		bytes   int64         // per request, when not 4 KiB
	}{
		{"mem/QD1", []string{"-d", "1"}, false, 0, 0, 0},
		{"journal/QD1", []string{"-d", "1"}, true, 0, 0, 0},
		{"journal/QD1-nopoll", []string{"-d", "1"}, true, 0, -1, 0},
		{"journal/QD16", []string{"-d", "16"}, true, 0, 0, 0},
		{"journal/QD16-nopoll", []string{"-d", "16"}, true, 0, -1, 0},
		{"journal/QD1-flush", []string{"-d", "1", "--flush-interval=1"}, true, 0, 0, 0},
		{"journal/QD1-flush-after-200MiB", []string{"-d", "1", "--flush-interval=1"}, true, 50000, 0, 0},
		// scripts/bench-iscsi.sh's 1 MiB sequential writes.
		{"mem/1M-QD4", []string{"-s", "1M", "-S", "1M", "-d", "4"}, false, 0, 0, 1 << 20},
		{"journal/1M-QD4", []string{"-s", "1M", "-S", "1M", "-d", "4"}, true, 0, 0, 1 << 20},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			var dev blockdev.Device
			if tc.store {
				s, err := store.Open(ctx, b.TempDir(), store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				if dev, err = s.CreateVolume(ctx, store.VolumeSpec{Name: "bench", Size: size, BlockSize: 4096}); err != nil {
					b.Fatal(err)
				}
			} else {
				m, err := blockdev.NewMem("bench", size, 4096, false)
				if err != nil {
					b.Fatal(err)
				}
				dev = m
			}
			srv := iscsi.NewServer(iscsi.ServerConfig{PollSpin: tc.spin})
			if err := srv.AddTarget(iscsi.TargetConfig{IQN: iqn, LUNs: []iscsi.LUNConfig{{Device: dev}}}); err != nil {
				b.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ctx, l)
			b.Cleanup(func() { srv.Close() })
			url := fmt.Sprintf("iscsi://%s/%s/0", l.Addr(), iqn)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			defer cancel()
			if tc.prefill > 0 {
				pre := []string{"bench", "-f", "raw", "-w", "-s", "4096", "-S", strconv.Itoa(4096 * 7919), "-d", "16", "-c", strconv.Itoa(tc.prefill), url}
				if out, err := exec.CommandContext(cctx, qemuImg, pre...).CombinedOutput(); err != nil {
					b.Fatalf("qemu-img bench (prefill): %v\n%s", err, out)
				}
			}
			args := append([]string{"bench", "-f", "raw", "-w", "-s", "4096", "-S", strconv.Itoa(4096 * 7919), "-c", strconv.Itoa(b.N)}, tc.args...)
			b.SetBytes(4096)
			if tc.bytes > 0 {
				b.SetBytes(tc.bytes)
			}
			b.ResetTimer()
			if out, err := exec.CommandContext(cctx, qemuImg, append(args, url)...).CombinedOutput(); err != nil {
				b.Fatalf("qemu-img bench: %v\n%s", err, out)
			}
		})
	}
}
