package vfs

import (
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sync"
	"syscall"
	"time"
)

// sectorSize is the unit in which CrashFS lets a disk write back unsynced
// overwrites independently of each other.
const sectorSize = 512

// CrashFS is an in-memory FS that models what survives a power loss, in the
// manner of pebble's crash-clone file system. Each file has a volatile state
// (what reads see) and a durable state (what File.Sync last made durable);
// each directory has a volatile and a durable set of entries (SyncDir). A
// rename is an entry change in its source and destination directories, so it
// is durable only once both are synced; with only the destination synced, the
// survivor holds the file under both names, like a hard link. Crash returns a
// new CrashFS holding what survived and kills this one.
//
// Files and directories are inodes: a file renamed over or removed while open
// stays usable through its handles until they are closed, as on POSIX, but
// it is gone after a crash.
//
// Paths are slash paths, absolute or relative to the root; they are cleaned
// with path.Clean. Not modelled: O_APPEND, renaming directories and opening
// a directory as a file (ErrUnsupported or EISDIR), permissions and times.
//
// All methods are safe for concurrent use; each operation is atomic.
type CrashFS struct {
	mu      sync.Mutex
	root    *inode
	dead    bool
	ops     int
	crashAt int
	onOp    func(Op)
	// log holds the directory entry changes not yet made durable by SyncDir,
	// in order; Crash may replay a prefix of it.
	log []metaOp
}

var _ FS = (*CrashFS)(nil)

type inode struct {
	isDir bool

	// Files. minSize is the smallest volatile size since the last Sync: the
	// bytes from there on may differ from the durable ones; dirty holds the
	// sectors below minSize written since the last Sync.
	data    []byte
	durable []byte
	minSize int
	dirty   map[int]struct{}

	// Directories.
	ents    map[string]*inode
	durEnts map[string]*inode
}

// effect sets dir's entry name to target, or removes it when target is nil.
type effect struct {
	dir    *inode
	name   string
	target *inode
}

// metaOp is one directory operation: all its effects survive or none does.
type metaOp struct{ effects []effect }

// NewCrashFS returns an empty CrashFS holding only the root directory.
func NewCrashFS() *CrashFS {
	return &CrashFS{root: newDir(), crashAt: -1}
}

func newDir() *inode {
	return &inode{isDir: true, ents: map[string]*inode{}, durEnts: map[string]*inode{}}
}

// SetOnOp installs a hook called before each mutating operation (create,
// write, sync, truncate, rename, remove, mkdir, syncdir), outside the file
// system's lock: it may call Crash, or panic to stop the workload. With
// several goroutines the order of hooks and operations may differ; use
// SetCrashPoint for an exact cut.
func (c *CrashFS) SetOnOp(hook func(Op)) {
	c.mu.Lock()
	c.onOp = hook
	c.mu.Unlock()
}

// SetCrashPoint makes the file system die right after its k-th mutating
// operation (counted from its creation, k >= 0): operation k+1 and
// everything after it fail with ErrCrashed, and Crash then returns what
// survived the instant after operation k. A negative k disarms it.
func (c *CrashFS) SetCrashPoint(k int) {
	c.mu.Lock()
	c.crashAt = k
	c.mu.Unlock()
}

// Ops returns how many mutating operations have been started, including
// ones that failed.
func (c *CrashFS) Ops() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ops
}

// Crashed reports whether the file system has crashed.
func (c *CrashFS) Crashed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// begin starts a mutating operation; when it returns nil, c.mu is held.
func (c *CrashFS) begin(kind OpKind, name string) error {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return ErrCrashed
	}
	c.ops++
	op := Op{Kind: kind, Path: name, Seq: c.ops}
	if c.crashAt >= 0 && op.Seq > c.crashAt {
		c.dead = true
		c.mu.Unlock()
		return ErrCrashed
	}
	hook := c.onOp
	if hook == nil {
		return nil
	}
	c.mu.Unlock()
	hook(op)
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return ErrCrashed
	}
	return nil
}

// lock starts a read-only operation; when it returns nil, c.mu is held.
func (c *CrashFS) lock() error {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return ErrCrashed
	}
	return nil
}

func clean(name string) string { return path.Clean("/" + name) }

// lookup returns the inode at the cleaned path p.
func (c *CrashFS) lookup(p string) (*inode, error) {
	n := c.root
	if p == "/" {
		return n, nil
	}
	for _, comp := range splitPath(p) {
		if !n.isDir {
			return nil, syscall.ENOTDIR
		}
		next, ok := n.ents[comp]
		if !ok {
			return nil, syscall.ENOENT
		}
		n = next
	}
	return n, nil
}

func splitPath(p string) []string {
	var out []string
	for p != "/" {
		out = append(out, path.Base(p))
		p = path.Dir(p)
	}
	slices.Reverse(out)
	return out
}

// parent returns the directory holding the cleaned path p and p's last
// element.
func (c *CrashFS) parent(p string) (*inode, string, error) {
	if p == "/" {
		return nil, "", syscall.EINVAL
	}
	dir, err := c.lookup(path.Dir(p))
	if err != nil {
		return nil, "", err
	}
	if !dir.isDir {
		return nil, "", syscall.ENOTDIR
	}
	return dir, path.Base(p), nil
}

// apply changes directory entries and records the change as one unsynced
// directory operation.
func (c *CrashFS) apply(effects ...effect) {
	for _, e := range effects {
		if e.target == nil {
			delete(e.dir.ents, e.name)
		} else {
			e.dir.ents[e.name] = e.target
		}
	}
	c.log = append(c.log, metaOp{effects: effects})
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// OpenFile opens name. Supported flags: O_RDONLY, O_WRONLY, O_RDWR,
// O_CREATE, O_EXCL, O_TRUNC; O_APPEND returns ErrUnsupported. perm is
// ignored.
func (c *CrashFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&os.O_APPEND != 0 {
		return nil, pathErr("open", name, ErrUnsupported)
	}
	p := clean(name)
	var err error
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		err = c.begin(OpCreate, p)
	} else {
		err = c.lock()
	}
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	defer c.mu.Unlock()
	if p == "/" {
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	dir, base, err := c.parent(p)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	n := dir.ents[base]
	switch {
	case n == nil:
		if flag&os.O_CREATE == 0 {
			return nil, pathErr("open", name, syscall.ENOENT)
		}
		n = &inode{}
		c.apply(effect{dir: dir, name: base, target: n})
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, pathErr("open", name, syscall.EEXIST)
	case n.isDir:
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	if flag&os.O_TRUNC != 0 {
		n.truncate(0)
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	return &crashFile{
		fs:       c,
		n:        n,
		name:     name,
		path:     p,
		readable: acc == os.O_RDONLY || acc == os.O_RDWR,
		writable: acc == os.O_WRONLY || acc == os.O_RDWR,
	}, nil
}

// Rename replaces newname with oldname. Renaming a directory returns
// ErrUnsupported.
func (c *CrashFS) Rename(oldname, newname string) error {
	op, np := clean(oldname), clean(newname)
	lerr := func(err error) error {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	if err := c.begin(OpRename, op); err != nil {
		return lerr(err)
	}
	defer c.mu.Unlock()
	odir, obase, err := c.parent(op)
	if err != nil {
		return lerr(err)
	}
	src := odir.ents[obase]
	if src == nil {
		return lerr(syscall.ENOENT)
	}
	if src.isDir {
		return lerr(ErrUnsupported)
	}
	ndir, nbase, err := c.parent(np)
	if err != nil {
		return lerr(err)
	}
	dst := ndir.ents[nbase]
	switch {
	case dst == src:
		return nil
	case dst != nil && dst.isDir:
		return lerr(syscall.EISDIR)
	}
	c.apply(effect{dir: ndir, name: nbase, target: src}, effect{dir: odir, name: obase})
	return nil
}

// Remove deletes a file or an empty directory.
func (c *CrashFS) Remove(name string) error {
	p := clean(name)
	if err := c.begin(OpRemove, p); err != nil {
		return pathErr("remove", name, err)
	}
	defer c.mu.Unlock()
	dir, base, err := c.parent(p)
	if err != nil {
		return pathErr("remove", name, err)
	}
	n := dir.ents[base]
	switch {
	case n == nil:
		return pathErr("remove", name, syscall.ENOENT)
	case n.isDir && len(n.ents) > 0:
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	c.apply(effect{dir: dir, name: base})
	return nil
}

// MkdirAll creates name and its missing parents; each new directory's entry
// is durable once its parent is synced.
func (c *CrashFS) MkdirAll(name string, perm fs.FileMode) error {
	p := clean(name)
	if err := c.begin(OpMkdir, p); err != nil {
		return pathErr("mkdir", name, err)
	}
	defer c.mu.Unlock()
	cur, sofar := c.root, "/"
	for _, comp := range splitPath(p) {
		sofar = path.Join(sofar, comp)
		next := cur.ents[comp]
		if next == nil {
			next = newDir()
			c.apply(effect{dir: cur, name: comp, target: next})
		} else if !next.isDir {
			return pathErr("mkdir", sofar, syscall.ENOTDIR)
		}
		cur = next
	}
	return nil
}

// ReadDir lists the names in a directory, sorted.
func (c *CrashFS) ReadDir(name string) ([]string, error) {
	if err := c.lock(); err != nil {
		return nil, pathErr("open", name, err)
	}
	defer c.mu.Unlock()
	n, err := c.lookup(clean(name))
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	if !n.isDir {
		return nil, pathErr("readdirent", name, syscall.ENOTDIR)
	}
	return slices.Sorted(maps.Keys(n.ents)), nil
}

// Stat reports the current (volatile) state of name.
func (c *CrashFS) Stat(name string) (fs.FileInfo, error) {
	if err := c.lock(); err != nil {
		return nil, pathErr("stat", name, err)
	}
	defer c.mu.Unlock()
	p := clean(name)
	n, err := c.lookup(p)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return fileInfo{name: path.Base(p), size: int64(len(n.data)), dir: n.isDir}, nil
}

// SyncDir makes the current entries of dir durable.
func (c *CrashFS) SyncDir(dir string) error {
	p := clean(dir)
	if err := c.begin(OpSyncDir, p); err != nil {
		return pathErr("sync", dir, err)
	}
	defer c.mu.Unlock()
	n, err := c.lookup(p)
	if err != nil {
		return pathErr("open", dir, err)
	}
	if !n.isDir {
		return pathErr("sync", dir, syscall.ENOTDIR)
	}
	n.durEnts = maps.Clone(n.ents)
	// The log only keeps changes that are not durable yet.
	log := c.log[:0]
	for _, op := range c.log {
		op.effects = slices.DeleteFunc(op.effects, func(e effect) bool { return e.dir == n })
		if len(op.effects) > 0 {
			log = append(log, op)
		}
	}
	clear(c.log[len(log):])
	c.log = log
	return nil
}

// CrashOptions chooses what a crash keeps beyond the durable state. The zero
// value is the strict model: only what was synced survives.
type CrashOptions struct {
	// KeepUnsyncedProb in [0, 1] emulates a disk that wrote back some
	// unsynced changes before losing power:
	//   - directory operations not yet made durable survive as a prefix of
	//     their order (as a journaling file system commits them): each next
	//     one survives with this probability, until the first that does not;
	//   - a file's unsynced size survives with this probability; failing
	//     that, a file that grew keeps, with the same probability again, a
	//     random proper prefix of the appended bytes;
	//   - each unsynced overwritten 512-byte sector below the durable size
	//     independently keeps its new content with this probability.
	// Every kept byte is one that was written at that offset.
	KeepUnsyncedProb float64
	// TornTail lets a file that grew without a sync end, with probability
	// one half, in up to 512 bytes of zeros or garbage past what was kept,
	// never past the size it had and never over synced bytes.
	TornTail bool
	// Rand drives the choices; nil means a fixed seed. Crashes with equal
	// seeds of one file system state give equal results.
	Rand *rand.Rand
}

// Crash kills c and returns a new CrashFS holding what survives a power loss
// at this instant (see CrashOptions). Every later operation on c and on files
// opened through it fails with ErrCrashed. Crash may be called again on a
// dead c: it draws another survivor of the same instant.
func (c *CrashFS) Crash(opts CrashOptions) *CrashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true

	p := min(max(opts.KeepUnsyncedProb, 0), 1)
	r := opts.Rand
	if r == nil && (p > 0 || opts.TornTail) {
		r = rand.New(rand.NewPCG(1, 1))
	}
	keep := 0
	for p > 0 && keep < len(c.log) && r.Float64() < p {
		keep++
	}
	// Surviving entries of the directories the kept operations touched.
	ents := map[*inode]map[string]*inode{}
	for _, op := range c.log[:keep] {
		for _, e := range op.effects {
			m, ok := ents[e.dir]
			if !ok {
				m = maps.Clone(e.dir.durEnts)
				ents[e.dir] = m
			}
			if e.target == nil {
				delete(m, e.name)
			} else {
				m[e.name] = e.target
			}
		}
	}

	cloned := map[*inode]*inode{}
	var clone func(old *inode) *inode
	clone = func(old *inode) *inode {
		if n, ok := cloned[old]; ok {
			return n
		}
		if old.isDir {
			n := newDir()
			cloned[old] = n
			m, ok := ents[old]
			if !ok {
				m = old.durEnts
			}
			// Sorted, so that a seed reproduces a crash.
			for _, name := range slices.Sorted(maps.Keys(m)) {
				n.ents[name] = clone(m[name])
			}
			n.durEnts = maps.Clone(n.ents)
			return n
		}
		data := old.survive(r, p, opts.TornTail)
		n := &inode{data: data, durable: slices.Clone(data), minSize: len(data)}
		cloned[old] = n
		return n
	}
	nc := NewCrashFS()
	nc.root = clone(c.root)
	return nc
}

// survive returns the content the file has after a crash.
func (n *inode) survive(r *rand.Rand, p float64, torn bool) []byte {
	d, v := n.durable, n.data
	if r == nil || (len(n.dirty) == 0 && n.minSize == len(d) && len(v) == len(d)) {
		return slices.Clone(d)
	}
	chance := func() bool { return r.Float64() < p }
	size := len(d)
	switch {
	case chance():
		size = len(v)
	case len(v) > len(d) && chance():
		size = len(d) + r.IntN(len(v)-len(d))
	}
	out := make([]byte, size)
	copy(out, d)
	if size > len(d) {
		copy(out[len(d):], v[len(d):size])
	}
	// Sectors below the durable size whose new content may have been
	// written back: the dirty ones and those from minSize on.
	limit := min(size, len(d))
	takeNew := func(s int) {
		lo := s * sectorSize
		hi := min(lo+sectorSize, limit, len(v))
		if lo < hi && chance() {
			copy(out[lo:hi], v[lo:hi])
		}
	}
	for _, s := range slices.Sorted(maps.Keys(n.dirty)) {
		takeNew(s)
	}
	for s := min(n.minSize, limit) / sectorSize; s*sectorSize < limit; s++ {
		if _, ok := n.dirty[s]; !ok {
			takeNew(s)
		}
	}
	if torn && len(v) > size && r.IntN(2) == 0 {
		tail := make([]byte, 1+r.IntN(min(sectorSize, len(v)-size)))
		if r.IntN(2) == 0 {
			for i := range tail {
				tail[i] = byte(r.UintN(256))
			}
		}
		out = append(out, tail...)
	}
	return out
}

func (n *inode) write(p []byte, off int) {
	for s := off / sectorSize; s*sectorSize < min(off+len(p), n.minSize); s++ {
		if n.dirty == nil {
			n.dirty = map[int]struct{}{}
		}
		n.dirty[s] = struct{}{}
	}
	if end := off + len(p); end > len(n.data) {
		n.data = append(n.data, make([]byte, end-len(n.data))...)
	}
	copy(n.data[off:], p)
}

func (n *inode) truncate(size int) {
	if size < len(n.data) {
		n.data = n.data[:size]
		n.minSize = min(n.minSize, size)
		return
	}
	n.data = append(n.data, make([]byte, size-len(n.data))...)
}

func (n *inode) sync() {
	cut := min(len(n.durable), n.minSize)
	for s := range n.dirty {
		if lo := s * sectorSize; lo < cut {
			hi := min(lo+sectorSize, cut)
			copy(n.durable[lo:hi], n.data[lo:hi])
		}
	}
	n.durable = append(n.durable[:cut], n.data[cut:]...)
	clear(n.dirty)
	n.minSize = len(n.data)
}

type crashFile struct {
	fs       *CrashFS
	n        *inode
	name     string // as opened, for Name and errors
	path     string // cleaned, for Op
	readable bool
	writable bool
	closed   bool
}

var _ File = (*crashFile)(nil)

// usable checks the handle; c.fs.mu must be held.
func (f *crashFile) usable(write bool) error {
	switch {
	case f.closed:
		return fs.ErrClosed
	case write && !f.writable, !write && !f.readable:
		return syscall.EBADF
	}
	return nil
}

func (f *crashFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.lock(); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	defer f.fs.mu.Unlock()
	if err := f.usable(false); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	if off < 0 {
		return 0, pathErr("readat", f.name, syscall.EINVAL)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.begin(OpWrite, f.path); err != nil {
		return 0, pathErr("write", f.name, err)
	}
	defer f.fs.mu.Unlock()
	if err := f.usable(true); err != nil {
		return 0, pathErr("write", f.name, err)
	}
	if off < 0 {
		return 0, pathErr("writeat", f.name, syscall.EINVAL)
	}
	f.n.write(p, int(off))
	return len(p), nil
}

func (f *crashFile) Sync() error {
	if err := f.fs.begin(OpSync, f.path); err != nil {
		return pathErr("sync", f.name, err)
	}
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("sync", f.name, fs.ErrClosed)
	}
	f.n.sync()
	return nil
}

func (f *crashFile) Truncate(size int64) error {
	if err := f.fs.begin(OpTruncate, f.path); err != nil {
		return pathErr("truncate", f.name, err)
	}
	defer f.fs.mu.Unlock()
	if err := f.usable(true); err != nil {
		return pathErr("truncate", f.name, err)
	}
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	f.n.truncate(int(size))
	return nil
}

func (f *crashFile) Size() (int64, error) {
	if err := f.fs.lock(); err != nil {
		return 0, pathErr("stat", f.name, err)
	}
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, pathErr("stat", f.name, fs.ErrClosed)
	}
	return int64(len(f.n.data)), nil
}

func (f *crashFile) Close() error {
	if err := f.fs.lock(); err != nil {
		return pathErr("close", f.name, err)
	}
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

func (f *crashFile) Name() string { return f.name }

type fileInfo struct {
	name string
	size int64
	dir  bool
}

func (i fileInfo) Name() string { return i.name }
func (i fileInfo) Size() int64  { return i.size }
func (i fileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return i.dir }
func (i fileInfo) Sys() any           { return nil }
