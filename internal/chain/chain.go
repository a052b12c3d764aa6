// Package chain brings a LUN of an iSCSI target up as a real Linux block
// device on a machine without a kernel iSCSI initiator: qemu-storage-daemon
// logs in with libiscsi and exports the LUN as a FUSE file, and a loop device
// turns that file into a block device that can carry ext4 and a real
// application. The demo and end-to-end tests use it to put real I/O through
// Lockstep's target.
//
// A qemu 7.2 defect shapes the chain (see Start): its FUSE export corrupts
// concurrent WRITE requests, so the loop device runs buffered (one request at
// a time) instead of with direct I/O. (Its iSCSI driver also aborted on reads
// of 32 KiB or more from a thin 4096-byte-block LUN that reported a 4 KiB
// optimal unmap granularity; the target no longer reports one, see
// engine/iscsi/scsi, so requests go through at full size.)
package chain

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config names the LUN to attach and where the chain keeps its files.
type Config struct {
	// Portal is the target's "host:port".
	Portal string
	// IQN is the target name.
	IQN string
	// LUN is the logical unit number.
	LUN uint64
	// WorkDir holds the FUSE export file and qemu's log; it is created if
	// missing.
	WorkDir string
	// BlockSize is the LUN's logical block size, used as the loop device's
	// sector size (default 4096).
	BlockSize int
	// InitiatorName is the iSCSI initiator name qemu logs in with (default
	// iqn.2026-11.io.lockstep:chain).
	InitiatorName string
	// ReadyTimeout bounds the wait for the FUSE export (default 30s).
	ReadyTimeout time.Duration
}

// Chain is one attached LUN. Its methods are safe for concurrent use; Stop
// must always be called, also after a failed Start step.
type Chain struct {
	cfg     Config
	export  string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	waitErr chan error
	logFile *os.File
	loop    string
	mounted string
	frozen  bool
	stopped bool
}

// Start launches qemu-storage-daemon against the target, waits for its FUSE
// export and attaches a loop device to it. On error the partial chain is
// already torn down.
func Start(ctx context.Context, cfg Config) (*Chain, error) {
	if cfg.Portal == "" || cfg.IQN == "" || cfg.WorkDir == "" {
		return nil, errors.New("chain: portal, IQN and work directory are required")
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 4096
	}
	if cfg.BlockSize != 512 && cfg.BlockSize != 4096 {
		return nil, fmt.Errorf("chain: block size %d, want 512 or 4096", cfg.BlockSize)
	}
	if cfg.InitiatorName == "" {
		cfg.InitiatorName = "iqn.2026-11.io.lockstep:chain"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("chain: work directory: %w", err)
	}
	abs, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("chain: work directory: %w", err)
	}
	cfg.WorkDir = abs
	c := &Chain{cfg: cfg, export: filepath.Join(abs, "lun.raw"), logPath: filepath.Join(abs, "qemu-storage-daemon.log")}
	if err := c.start(ctx); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// qemuOpt escapes a value for qemu's comma-separated option syntax.
func qemuOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func (c *Chain) start(ctx context.Context) error {
	qsd, err := exec.LookPath("qemu-storage-daemon")
	if err != nil {
		return fmt.Errorf("chain: %w (install qemu-system-common and qemu-block-extra)", err)
	}
	if isMounted(c.export) {
		return fmt.Errorf("chain: %s is still mounted by an earlier chain", c.export)
	}
	if err := os.WriteFile(c.export, nil, 0o600); err != nil {
		return fmt.Errorf("chain: export file: %w", err)
	}
	lf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("chain: qemu log: %w", err)
	}
	bs := strconv.Itoa(c.cfg.BlockSize)
	args := []string{
		"--blockdev", "driver=iscsi,node-name=lun,transport=tcp,portal=" + qemuOpt(c.cfg.Portal) +
			",target=" + qemuOpt(c.cfg.IQN) + ",lun=" + strconv.FormatUint(c.cfg.LUN, 10) +
			",initiator-name=" + qemuOpt(c.cfg.InitiatorName) + ",cache.direct=on",
		"--export", "type=fuse,id=exp,node-name=lun,writable=on,mountpoint=" + qemuOpt(c.export),
	}
	fmt.Fprintf(lf, "# %s %s\n", qsd, strings.Join(args, " "))
	cmd := exec.Command(qsd, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// qemu must not outlive us holding the FUSE mount.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("chain: start qemu-storage-daemon: %w", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	c.mu.Lock()
	c.cmd, c.waitErr, c.logFile = cmd, waitErr, lf
	c.mu.Unlock()

	if err := c.waitExport(ctx); err != nil {
		return err
	}
	out, err := run(ctx, "losetup", "-f", "--show", "-b", bs, c.export)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.loop = strings.TrimSpace(out)
	c.mu.Unlock()
	return nil
}

// waitExport waits until qemu has mounted the FUSE export with the LUN's size.
func (c *Chain) waitExport(ctx context.Context) error {
	deadline := time.Now().Add(c.cfg.ReadyTimeout)
	for {
		if isMounted(c.export) {
			if st, err := os.Stat(c.export); err == nil && st.Size() > 0 {
				return nil
			}
		}
		select {
		case err := <-c.waitErr:
			c.waitErr <- err // Stop reads it again
			return fmt.Errorf("chain: qemu-storage-daemon exited before exporting %s LUN %d (%v): %s", c.cfg.IQN, c.cfg.LUN, err, c.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chain: FUSE export of %s LUN %d not ready after %v: %s", c.cfg.IQN, c.cfg.LUN, c.cfg.ReadyTimeout, c.tail())
		}
	}
}

// Device is the loop device ("/dev/loopN"), empty before Start finished.
func (c *Chain) Device() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loop
}

// ExportFile is the FUSE file qemu exports the LUN as.
func (c *Chain) ExportFile() string { return c.export }

// LogPath is qemu-storage-daemon's output.
func (c *Chain) LogPath() string { return c.logPath }

// Log returns qemu-storage-daemon's output so far.
func (c *Chain) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Reconnects counts the iSCSI reconnects and session errors qemu reported;
// a healthy run has none.
func (c *Chain) Reconnects() int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(c.Log()))
	for sc.Scan() {
		l := strings.ToLower(sc.Text())
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.Contains(l, "reconnect") {
			n++
		}
	}
	return n
}

// tail is the end of qemu's output, for error messages.
func (c *Chain) tail() string {
	lines := strings.Split(strings.TrimSpace(c.Log()), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	if l := strings.Join(lines, " | "); l != "" {
		return "qemu: " + l
	}
	return "no qemu output"
}

// Mkfs makes an ext4 file system on the device.
func (c *Chain) Mkfs(ctx context.Context) error {
	dev := c.Device()
	if dev == "" {
		return errors.New("chain: no device")
	}
	// No lazy init: the file system is complete before anyone relies on it,
	// and no kernel thread keeps writing after mount.
	_, err := run(ctx, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
	return err
}

// Mount mounts the device's file system on dir, creating dir if needed.
func (c *Chain) Mount(ctx context.Context, dir string) error {
	dev := c.Device()
	if dev == "" {
		return errors.New("chain: no device")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("chain: mount point: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("chain: mount point: %w", err)
	}
	c.mu.Lock()
	if c.mounted != "" {
		c.mu.Unlock()
		return fmt.Errorf("chain: %s already mounted on %s", dev, c.mounted)
	}
	c.mu.Unlock()
	if _, err := run(ctx, "mount", "-t", "ext4", dev, abs); err != nil {
		return err
	}
	c.mu.Lock()
	c.mounted = abs
	c.mu.Unlock()
	return nil
}

// MountPoint is where the file system is mounted, empty when it is not.
func (c *Chain) MountPoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mounted
}

// Freeze suspends writes to the mounted file system and flushes it down to
// the target (fsfreeze -f): when it returns, everything written before is on
// the LUN.
func (c *Chain) Freeze(ctx context.Context) error {
	mp := c.MountPoint()
	if mp == "" {
		return errors.New("chain: nothing mounted to freeze")
	}
	if _, err := run(ctx, "fsfreeze", "-f", mp); err != nil {
		return err
	}
	c.mu.Lock()
	c.frozen = true
	c.mu.Unlock()
	return nil
}

// Thaw resumes writes (fsfreeze -u). It ignores ctx's cancellation: a thaw
// must happen whatever else failed.
func (c *Chain) Thaw(ctx context.Context) error {
	mp := c.MountPoint()
	if mp == "" {
		return errors.New("chain: nothing mounted to thaw")
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := run(tctx, "fsfreeze", "-u", mp); err != nil {
		return err
	}
	c.mu.Lock()
	c.frozen = false
	c.mu.Unlock()
	return nil
}

// Unmount unmounts the file system (lazily if a plain unmount fails).
func (c *Chain) Unmount(ctx context.Context) error {
	c.mu.Lock()
	mp, frozen := c.mounted, c.frozen
	c.mu.Unlock()
	if mp == "" {
		return nil
	}
	if frozen {
		c.Thaw(ctx)
	}
	_, err := run(ctx, "umount", mp)
	if err != nil {
		if _, lerr := run(context.WithoutCancel(ctx), "umount", "-l", mp); lerr != nil && isMounted(mp) {
			return errors.Join(err, lerr)
		}
		err = nil
	}
	c.mu.Lock()
	c.mounted = ""
	c.mu.Unlock()
	return err
}

// Stop tears the chain down in reverse order: unmount, detach the loop
// device, stop qemu (which logs out of the target) and remove the FUSE
// mount. It is idempotent and works on a partly started chain.
func (c *Chain) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()

	var errs []error
	if err := c.Unmount(ctx); err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	loop := c.loop
	c.loop = ""
	c.mu.Unlock()
	if loop != "" {
		if _, err := run(ctx, "losetup", "-d", loop); err != nil {
			errs = append(errs, err)
		}
	}
	c.mu.Lock()
	cmd, waitErr, lf := c.cmd, c.waitErr, c.logFile
	c.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waitErr:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-waitErr
			errs = append(errs, errors.New("chain: qemu-storage-daemon ignored SIGTERM and was killed"))
		}
	}
	// The export is ours only once our qemu ran; never touch another
	// chain's mount that made Start fail.
	if cmd != nil {
		if isMounted(c.export) {
			// qemu died without unmounting: a stale FUSE mount.
			if _, err := run(ctx, "umount", "-l", c.export); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(c.export); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("chain: %w", err))
		}
	}
	if lf != nil {
		lf.Close()
	}
	return errors.Join(errs...)
}

// run runs a command and returns its standard output; the error carries
// its standard error.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("chain: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// isMounted reports whether path is a mount point, from /proc/self/mountinfo.
func isMounted(path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Available reports why a chain cannot be built on this machine, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("chain: needs root (loop devices, mounts)")
	}
	for _, b := range []string{"qemu-storage-daemon", "losetup", "mkfs.ext4", "mount", "umount", "fsfreeze"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("chain: %w (see scripts/deps/demo.txt)", err)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("chain: no FUSE: %w", err)
	}
	return nil
}
