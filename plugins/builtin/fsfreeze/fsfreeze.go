// Package fsfreeze is the built-in plugin that freezes file systems with
// FIFREEZE and thaws them with FITHAW: a frozen file system has written all
// its dirty data and metadata and blocks every writer, so a cut taken then
// needs no journal replay.
//
// It also owns the file systems during a restore. Stop unmounts them, after
// saving what it unmounted (device, type, options) in a small state file so
// that another plugin process can Start; Start drops the host's cached
// blocks of each device (BLKFLSBUF), since the volume under it was rolled
// back and a cached block would be stale, and mounts it again.
//
// Only mount points are frozen: freezing a plain directory would freeze the
// file system it sits on (the root, say), so a configured path that is not a
// mount point is an error.
package fsfreeze

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Name is the plugin's name in policies.
const Name = "fsfreeze"

// Version is the plugin's version.
const Version = "0.1.0"

// ioctl requests of linux/fs.h: _IOWR('X', 119, int) and _IOWR('X', 120, int).
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// healthProbeTimeout is how long Health's write may take before the file
// system counts as frozen or stuck.
const healthProbeTimeout = 2 * time.Second

// Plugin is the fsfreeze plugin. It remembers which mount points it froze
// for each app, so a failed freeze thaws only its own.
type Plugin struct {
	mu     sync.Mutex
	frozen map[string]*freeze // by service/app
}

var _ sdk.Plugin = (*Plugin)(nil)

// New returns the fsfreeze plugin.
func New() sdk.Plugin { return &Plugin{frozen: map[string]*freeze{}} }

type freeze struct {
	mountpoints []string // in the order frozen
	timer       *time.Timer
}

// Info implements sdk.Plugin.
func (*Plugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: Name, Version: Version, Protocol: sdk.ProtocolVersion, Handles: []string{"linux file systems with FIFREEZE (ext4, xfs, btrfs)"}}, nil
}

// Schema is the fsfreeze plugin's app schema.
var Schema = sdk.Schema{
	Doc: "Freezes file systems with FIFREEZE/FITHAW around the marker; at restore, unmounts them, drops the host's cached blocks (BLKFLSBUF) and mounts them again.",
	Attributes: []sdk.Attribute{
		{Name: "mountpoints", Type: sdk.StringList, Required: true, NonEmpty: true, Absolute: true, Doc: "Mount points to freeze, in order (thawed in reverse); each must be a mount point."},
		{Name: "state_directory", Type: sdk.String, Absolute: true, Doc: "Where stop records what it unmounted, for start; default `lockstep-fsfreeze` in the system's temp directory. Must not be on one of the mount points."},
		{Name: "host", Type: sdk.String, Doc: "Where the app runs; empty means the daemon's machine."},
	},
}

// ConfigSchema implements sdk.Plugin.
func (*Plugin) ConfigSchema(context.Context) (sdk.Schema, error) { return Schema, nil }

// Validate implements sdk.Plugin.
func (*Plugin) Validate(_ context.Context, app sdk.App) (sdk.Diagnostics, error) {
	var diags sdk.Diagnostics
	seen := map[string]bool{}
	state := stateDir(app)
	for _, mp := range app.Config.Strings("mountpoints") {
		clean := filepath.Clean(mp)
		if seen[clean] {
			diags = append(diags, sdk.Diagnostic{Attribute: "mountpoints", Summary: "duplicate mount point", Detail: fmt.Sprintf("%q is listed twice.", mp)})
		}
		seen[clean] = true
		if st, err := os.Stat(mp); err != nil || !st.IsDir() {
			diags = append(diags, sdk.Diagnostic{Attribute: "mountpoints", Summary: "no such directory", Detail: fmt.Sprintf("%q is not a directory.", mp)})
		}
		if clean != "/" && (state == clean || strings.HasPrefix(state, clean+"/")) {
			diags = append(diags, sdk.Diagnostic{Attribute: "state_directory", Summary: "state directory on a frozen file system", Detail: fmt.Sprintf("%q is under %q, which stop unmounts; choose a directory elsewhere.", state, mp)})
		}
	}
	return diags, nil
}

// Prepare implements sdk.Plugin: syncfs on each file system, so that the
// freeze has little left to write.
func (*Plugin) Prepare(ctx context.Context, app sdk.App) error {
	for _, mp := range app.Config.Strings("mountpoints") {
		if err := ctx.Err(); err != nil {
			return err
		}
		fd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("fsfreeze: open %q: %w", mp, err)
		}
		err = unix.Syncfs(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fsfreeze: syncfs %q: %w", mp, err)
		}
	}
	return nil
}

func key(app sdk.App) string { return app.Service + "/" + app.Name }

// Freeze implements sdk.Plugin. The mount points are frozen in order; if
// one fails, those already frozen are thawed. FIFREEZE cannot be
// interrupted: when the deadline passes first, Freeze returns an error and
// what the freeze goes on to freeze is thawed as soon as it returns.
func (p *Plugin) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	if err := p.thawOwn(app); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fsfreeze: app %q: %w", app.Name, err)
	}
	mps := app.Config.Strings("mountpoints")
	table, err := mounts()
	if err != nil {
		return nil, err
	}
	var list []any
	for _, mp := range mps {
		m, ok := table[filepath.Clean(mp)]
		if !ok {
			return nil, fmt.Errorf("fsfreeze: app %q: %q is not a mount point: freezing it would freeze the file system it is on", app.Name, mp)
		}
		list = append(list, map[string]any{"mountpoint": mp, "device": m.Source, "dev": m.Dev, "fstype": m.FSType})
	}
	type result struct {
		frozen []string
		err    error
	}
	done := make(chan result, 1)
	freezeFS := freezeFS
	go func() {
		var frozen []string
		for _, mp := range mps {
			if err := freezeFS(mp); err != nil {
				if errors.Is(err, unix.EBUSY) {
					err = fmt.Errorf("%w (already frozen, by another tool?)", err)
				}
				done <- result{frozen, fmt.Errorf("fsfreeze: app %q: freeze %q: %w", app.Name, mp, err)}
				return
			}
			frozen = append(frozen, mp)
		}
		done <- result{frozen, nil}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			r := <-done
			thawList(r.frozen)
		}()
		return nil, fmt.Errorf("fsfreeze: app %q: freeze did not finish by the deadline (what it froze is thawed when it does): %w", app.Name, ctx.Err())
	}
	if r.err != nil {
		if err := thawList(r.frozen); err != nil {
			return nil, fmt.Errorf("%w; thaw of the others: %v", r.err, err)
		}
		return nil, r.err
	}
	f := &freeze{mountpoints: r.frozen}
	p.mu.Lock()
	if hold > 0 {
		f.timer = time.AfterFunc(hold, func() { p.expire(key(app), f) })
	}
	p.frozen[key(app)] = f
	p.mu.Unlock()
	return sdk.Evidence{"mountpoints": list}, nil
}

// freezeFS freezes one file system; a test may wrap it to make it slow.
var freezeFS = func(mp string) error { return ioctlPath(mp, fiFreeze) }

// expire thaws f if it is still app k's freeze.
func (p *Plugin) expire(k string, f *freeze) {
	p.mu.Lock()
	if p.frozen[k] != f {
		p.mu.Unlock()
		return
	}
	delete(p.frozen, k)
	p.mu.Unlock()
	thawList(f.mountpoints)
}

// thawOwn thaws what this process froze for app.
func (p *Plugin) thawOwn(app sdk.App) error {
	p.mu.Lock()
	f := p.frozen[key(app)]
	delete(p.frozen, key(app))
	p.mu.Unlock()
	if f == nil {
		return nil
	}
	if f.timer != nil {
		f.timer.Stop()
	}
	return thawList(f.mountpoints)
}

// thawList thaws mount points in reverse order; one that is not frozen is
// fine.
func thawList(mps []string) error {
	var errs []error
	for i := len(mps) - 1; i >= 0; i-- {
		if err := thaw(mps[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func thaw(mp string) error {
	err := ioctlPath(mp, fiThaw)
	if err == nil || errors.Is(err, unix.EINVAL) { // EINVAL: not frozen
		return nil
	}
	return fmt.Errorf("fsfreeze: thaw %q: %w", mp, err)
}

// Thaw implements sdk.Plugin. It thaws every configured mount point that
// is mounted, not only those this process froze, so a new plugin process
// can release what a crashed one held.
func (p *Plugin) Thaw(_ context.Context, app sdk.App) error {
	own := p.thawOwn(app)
	table, err := mounts()
	if err != nil {
		return errors.Join(own, err)
	}
	var mounted []string
	for _, mp := range app.Config.Strings("mountpoints") {
		if _, ok := table[filepath.Clean(mp)]; ok {
			mounted = append(mounted, mp)
		}
	}
	return errors.Join(own, thawList(mounted))
}

// ioctlPath issues a no-argument ioctl on the directory mp.
func ioctlPath(mp string, req uint) error {
	fd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Health implements sdk.Plugin: each mount point is mounted read-write and
// takes a write. A write to a frozen file system blocks until the thaw;
// the probe gives up after healthProbeTimeout and finishes (and removes its
// file) in the background once the file system thaws.
func (p *Plugin) Health(ctx context.Context, app sdk.App) (sdk.Health, error) {
	p.mu.Lock()
	f := p.frozen[key(app)]
	p.mu.Unlock()
	if f != nil {
		return sdk.Health{OK: false, Detail: fmt.Sprintf("frozen by this plugin: %s", strings.Join(f.mountpoints, ", "))}, nil
	}
	table, err := mounts()
	if err != nil {
		return sdk.Health{}, err
	}
	var ok []string
	for _, mp := range app.Config.Strings("mountpoints") {
		m, mounted := table[filepath.Clean(mp)]
		switch {
		case !mounted:
			return sdk.Health{OK: false, Detail: fmt.Sprintf("%q is not mounted", mp)}, nil
		case !hasOption(m.Options, "rw") || !hasOption(m.Super, "rw"):
			return sdk.Health{OK: false, Detail: fmt.Sprintf("%q is mounted read-only", mp)}, nil
		}
		if err := probe(ctx, mp); err != nil {
			return sdk.Health{OK: false, Detail: err.Error()}, nil
		}
		ok = append(ok, fmt.Sprintf("%s (%s on %s)", mp, m.FSType, m.Source))
	}
	return sdk.Health{OK: true, Detail: "mounted and writable: " + strings.Join(ok, ", ")}, nil
}

// probe creates and removes a file in mp.
func probe(ctx context.Context, mp string) error {
	done := make(chan error, 1)
	go func() {
		f, err := os.CreateTemp(mp, ".lockstep-health-")
		if err != nil {
			done <- err
			return
		}
		f.Close()
		done <- os.Remove(f.Name())
	}()
	t := time.NewTimer(healthProbeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%q does not take a write: %w", mp, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%q: a write did not finish in %s (frozen?)", mp, healthProbeTimeout)
	case <-ctx.Done():
		return fmt.Errorf("%q: write probe: %w", mp, ctx.Err())
	}
}

// record is what Stop remembers of one unmounted file system.
type record struct {
	Mountpoint string `json:"mountpoint"`
	Source     string `json:"source"`
	FSType     string `json:"fstype"`
	Options    string `json:"options"` // per-mount
	Super      string `json:"super"`   // per-superblock
}

// stateDir is where Stop's records of app live.
func stateDir(app sdk.App) string {
	if d := app.Config.String("state_directory"); d != "" {
		return filepath.Clean(d)
	}
	return filepath.Join(os.TempDir(), "lockstep-fsfreeze")
}

func statePath(app sdk.App) string {
	return filepath.Join(stateDir(app), url.PathEscape(app.Service)+"_"+url.PathEscape(app.Name)+".json")
}

func loadState(app sdk.App) (map[string]record, error) {
	out := map[string]record{}
	b, err := os.ReadFile(statePath(app))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fsfreeze: %w", err)
	}
	var recs []record
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("fsfreeze: state file %s: %w", statePath(app), err)
	}
	for _, r := range recs {
		out[r.Mountpoint] = r
	}
	return out, nil
}

// saveState writes the records durably: temp file, fsync, rename, fsync of
// the directory.
func saveState(app sdk.App, recs []record) error {
	dir := stateDir(app)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("fsfreeze: state directory: %w", err)
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".state-")
	if err != nil {
		return fmt.Errorf("fsfreeze: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), statePath(app))
	}
	if err != nil {
		return fmt.Errorf("fsfreeze: write state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Stop implements sdk.Plugin: it thaws, records each mounted file system
// and unmounts them in reverse order. A busy file system is an error: the
// application must be stopped first. Stopping unmounted file systems
// succeeds.
func (p *Plugin) Stop(ctx context.Context, app sdk.App) error {
	if err := p.Thaw(ctx, app); err != nil {
		return err
	}
	mps := app.Config.Strings("mountpoints")
	old, err := loadState(app)
	if err != nil {
		return err
	}
	table, err := mounts()
	if err != nil {
		return err
	}
	var recs []record
	var toUnmount []string
	for _, mp := range mps {
		clean := filepath.Clean(mp)
		if m, ok := table[clean]; ok {
			recs = append(recs, record{Mountpoint: clean, Source: m.Source, FSType: m.FSType, Options: m.Options, Super: m.Super})
			toUnmount = append(toUnmount, clean)
		} else if r, ok := old[clean]; ok {
			recs = append(recs, r)
		}
	}
	// Recorded before anything is unmounted, so a crash in between still
	// leaves Start what it needs.
	if err := saveState(app, recs); err != nil {
		return err
	}
	for i := len(toUnmount) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := unix.Unmount(toUnmount[i], 0); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("fsfreeze: app %q: unmount %q: %w: something still uses it; stop the application first", app.Name, toUnmount[i], err)
			}
			return fmt.Errorf("fsfreeze: app %q: unmount %q: %w", app.Name, toUnmount[i], err)
		}
	}
	return nil
}

// flushBuffers drops the host's cached blocks of a block device; a test
// may wrap it to watch the calls.
var flushBuffers = func(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKFLSBUF, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Start implements sdk.Plugin: for each mount point, in order, that is not
// mounted, it drops the device's cached blocks and mounts it as Stop
// recorded it. Starting mounted file systems succeeds.
func (p *Plugin) Start(ctx context.Context, app sdk.App) error {
	recs, err := loadState(app)
	if err != nil {
		return err
	}
	table, err := mounts()
	if err != nil {
		return err
	}
	for _, mp := range app.Config.Strings("mountpoints") {
		if err := ctx.Err(); err != nil {
			return err
		}
		clean := filepath.Clean(mp)
		if _, ok := table[clean]; ok {
			continue
		}
		r, ok := recs[clean]
		if !ok {
			return fmt.Errorf("fsfreeze: app %q: %q is not mounted and stop left no record of its device (%s): mount it by hand", app.Name, mp, statePath(app))
		}
		if st, err := os.Stat(r.Source); err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
			if err := flushBuffers(r.Source); err != nil {
				return fmt.Errorf("fsfreeze: app %q: drop cached blocks of %q: %w", app.Name, r.Source, err)
			}
		}
		flags, data := mountArgs(r)
		err := unix.Mount(r.Source, clean, r.FSType, flags, data)
		if errors.Is(err, unix.EINVAL) && data != "" {
			// An option shown by the kernel that mount does not take back.
			err = unix.Mount(r.Source, clean, r.FSType, flags, "")
		}
		if err != nil {
			return fmt.Errorf("fsfreeze: app %q: mount %q on %q: %w", app.Name, r.Source, mp, err)
		}
	}
	if err := os.Remove(statePath(app)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fsfreeze: %w", err)
	}
	return nil
}

// mountFlags maps per-mount options to mount(2) flags.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC, "noatime": unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME,
	"lazytime": unix.MS_LAZYTIME,
}

// mountArgs turns a record back into mount(2)'s flags and data.
func mountArgs(r record) (uintptr, string) {
	var flags uintptr
	for _, o := range strings.Split(r.Options, ",") {
		flags |= mountFlags[o]
	}
	var data []string
	for _, o := range strings.Split(r.Super, ",") {
		switch {
		case o == "rw", o == "ro", o == "seclabel", o == "":
		case mountFlags[o] != 0:
			flags |= mountFlags[o]
		default:
			data = append(data, o)
		}
	}
	return flags, strings.Join(data, ",")
}
