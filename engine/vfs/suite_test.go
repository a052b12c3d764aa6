package vfs_test

import (
	"testing"

	"github.com/lockstep-io/lockstep/engine/vfs"
	"github.com/lockstep-io/lockstep/engine/vfs/vfstest"
)

func TestConformanceOS(t *testing.T) {
	vfstest.Run(t, func(t *testing.T) (vfs.FS, string) { return vfs.OS{}, t.TempDir() })
}

func TestConformanceCrashFS(t *testing.T) {
	for _, dir := range []string{"/", "/data/x", "rel/dir"} {
		t.Run(dir, func(t *testing.T) {
			vfstest.Run(t, func(t *testing.T) (vfs.FS, string) {
				c := vfs.NewCrashFS()
				if err := c.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				return c, dir
			})
		})
	}
}

// A FaultFS with no fault armed must be transparent.
func TestConformanceFaultFS(t *testing.T) {
	t.Run("OS", func(t *testing.T) {
		vfstest.Run(t, func(t *testing.T) (vfs.FS, string) { return vfs.NewFaultFS(vfs.OS{}), t.TempDir() })
	})
	t.Run("CrashFS", func(t *testing.T) {
		vfstest.Run(t, func(t *testing.T) (vfs.FS, string) { return vfs.NewFaultFS(vfs.NewCrashFS()), "/" })
	})
}
