package chain

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Rolling a volume back under a live chain (qemu stays logged in, the loop
// device stays attached, as during a service restore) leaves two host caches
// holding the newer blocks, and both must be dropped before anything reads
// the device again (TestRollUnderLiveChain shows each one):
//
//   - the loop device's page cache (ext4 metadata, raw reads of the
//     device): dropped when its last opener closes it, and by BLKFLSBUF,
//     which the fsfreeze plugin issues before it mounts again;
//   - the page cache of the FUSE export file the loop device reads through:
//     qemu 7.2's FUSE export does not open it direct_io, and the loop
//     device holds it open for the chain's life. The kernel drops its pages
//     when the file is opened again (no keep_cache), on fadvise DONTNEED, or
//     up to a second later when qemu's attributes expire. BLKFLSBUF on the
//     loop device does not reach it.
//
// A host with a kernel iSCSI initiator has only the first. The second is
// the chain's own; DropExportCache drops it, and DropExportCacheCommand is
// the same as a command, for a policy's exec app that a restore starts
// before the file system's.

// exportName is the FUSE export file Start creates in the work directory.
const exportName = "lun.raw"

// ExportFile is the FUSE export file of a chain started with workDir,
// known before the chain starts (a policy written first can name it).
func ExportFile(workDir string) string {
	abs, err := filepath.Abs(workDir)
	if err != nil {
		abs = workDir
	}
	return filepath.Join(abs, exportName)
}

// DropExportCache drops the page cache of the FUSE export file, so that the
// loop device reads the LUN as it is now. Call it after the volume was
// rolled back and before the device is read (with BLKFLSBUF on the device).
func (c *Chain) DropExportCache() error {
	f, err := os.Open(c.export) // the open alone drops the pages
	if err != nil {
		return fmt.Errorf("chain: drop the export's cache: %w", err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("chain: drop the export's cache: fadvise %s: %w", c.export, err)
	}
	return nil
}

// DropExportCacheCommand is DropExportCache as a command for the chain of
// workDir: coreutils dd opening the export file and advising the kernel to
// drop its cached pages (iflag=nocache with count=0 covers the whole file).
func DropExportCacheCommand(workDir string) []string {
	return []string{"dd", "if=" + ExportFile(workDir), "iflag=nocache", "count=0", "status=none"}
}

// Mounted reports whether path is a mount point now.
func Mounted(path string) bool { return isMounted(path) }
