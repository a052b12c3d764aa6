package vfstest

import (
	"fmt"
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Workload runs the code under test on fsys until it finishes or fsys dies
// (its operations then fail with vfs.ErrCrashed; the workload must stop
// quietly), and returns a check of what must hold on the file system that
// survived. The check is built from what the workload saw acknowledged, so
// it is called after the crash with the survivor.
type Workload func(t *testing.T, fsys vfs.FS) (check func(t *testing.T, survivor vfs.FS))

// EachCrashPoint cuts a workload at every mutating operation: it runs it
// once on a CrashFS to count its operations N, then for every k in 0..N on a
// fresh CrashFS that dies right after operation k, crashes it with opts and
// runs the returned check on the survivor, each k in its own subtest. The
// workload must issue the same operations in the same order on every run
// (single goroutine, or operations ordered by the workload itself).
func EachCrashPoint(t *testing.T, opts vfs.CrashOptions, run Workload) {
	t.Helper()
	whole := vfs.NewCrashFS()
	check := run(t, whole)
	n := whole.Ops()
	if whole.Crashed() {
		t.Fatal("vfstest: the uncut workload crashed its file system")
	}
	t.Run("uncut", func(t *testing.T) { check(t, whole.Crash(opts)) })
	for k := range n + 1 {
		t.Run(fmt.Sprintf("after-op-%d", k), func(t *testing.T) {
			fsys := vfs.NewCrashFS()
			fsys.SetCrashPoint(k)
			check := run(t, fsys)
			check(t, fsys.Crash(opts))
		})
	}
}
