package iscsi

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/iscsi/iscsitest"
)

// slowDev adds a fixed service time to every read, like a device that is
// not RAM.
type slowDev struct {
	*blockdev.Mem
	delay time.Duration
}

func (s slowDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	time.Sleep(s.delay)
	return s.Mem.ReadAt(ctx, p, off)
}

// BenchmarkRead4K measures 4 KiB reads through the target at queue depth 1
// and 32, from a memory device and from one with 200µs per read. Commands
// of a session run concurrently, so the deeper queue overlaps round trips
// and device time.
func BenchmarkRead4K(b *testing.B) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
		qd    int
	}{{"mem/QD1", 0, 1}, {"mem/QD32", 0, 32}, {"200us/QD1", 200 * time.Microsecond, 1}, {"200us/QD32", 200 * time.Microsecond, 32}} {
		qd := tc.qd
		b.Run(tc.name, func(b *testing.B) {
			var dev blockdev.Device = memDev(b, 256<<20)
			if tc.delay > 0 {
				dev = slowDev{dev.(*blockdev.Mem), tc.delay}
			}
			ts := startServer(b, ServerConfig{}, simpleTarget(dev))
			ini, err := dialInitiator(b, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.SetBytes(4096)
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range qd {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						lba := uint32(i*8*7919) % (256 << 20 / 512)
						lba -= lba % 8
						r, err := ini.Command(ctx, 0, cdb10(0x28, lba, 8, 0), nil, 4096)
						if err != nil || r.Status != 0 {
							b.Errorf("read: %v status %d", err, r.Status)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkWrite4K measures 4 KiB writes with immediate data (as libiscsi
// and the Linux initiator send them) to a memory device at queue depth 1
// and 16: the target's per-command cost without a journal.
func BenchmarkWrite4K(b *testing.B) {
	for _, qd := range []int{1, 16} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) {
			ts := startServer(b, ServerConfig{}, simpleTarget(memDev(b, 64<<20)))
			ini, err := dialInitiator(b, ts.addr, iscsitest.LoginOptions{InitiatorName: initiatorName, TargetName: testIQN, ImmediateData: true})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			data := make([]byte, 4096)
			b.SetBytes(4096)
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range qd {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if err := ini.Write10(ctx, 0, uint32(i*8*7919)%(64<<20/512)&^7, data, false); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
