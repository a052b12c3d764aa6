package vfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// Fault decides the fate of one mutating operation of a FaultFS. n is the
// 1-based count of operations of op.Kind so far, op.Seq the count of all
// mutating operations. The zero Action lets the operation run. Faults run
// under the FaultFS's lock and must not call its methods.
type Fault func(op Op, n int) Action

// Action is what a Fault does to an operation.
type Action struct {
	// Err fails the operation without running it.
	Err error
	// Trip also fails every later operation with Err.
	Trip bool
	// Short makes a write write only half its bytes and then fail with
	// io.ErrShortWrite.
	Short bool
}

// FaultFS wraps an FS and injects errors into mutating operations, to test
// that callers report I/O errors and lose nothing they acknowledged. Faults
// are added with Add (or the helpers FailNth, FailAfter, ShortWriteNth) and
// are checked in order; the first that fires wins. Once Trip is called, or a
// FailAfter fault fires, every operation fails, reads included, except Close,
// which still releases the inner file. It wraps any FS, a CrashFS included.
type FaultFS struct {
	inner FS

	mu      sync.Mutex
	faults  []Fault
	counts  map[OpKind]int
	seq     int
	tripped error
}

var _ FS = (*FaultFS)(nil)

// NewFaultFS wraps inner with no faults armed.
func NewFaultFS(inner FS) *FaultFS {
	return &FaultFS{inner: inner, counts: map[OpKind]int{}}
}

// Add arms a fault.
func (f *FaultFS) Add(fault Fault) {
	f.mu.Lock()
	f.faults = append(f.faults, fault)
	f.mu.Unlock()
}

// FailNth fails the n-th operation of kind (1-based) with err (ErrInjected
// if nil).
func (f *FaultFS) FailNth(kind OpKind, n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	f.Add(func(op Op, i int) Action {
		if op.Kind == kind && i == n {
			return Action{Err: err}
		}
		return Action{}
	})
}

// FailAfter lets the first n mutating operations run and fails every
// operation after them with err (ErrInjected if nil), as a device that died.
func (f *FaultFS) FailAfter(n int, err error) {
	if err == nil {
		err = ErrInjected
	}
	f.Add(func(op Op, _ int) Action {
		if op.Seq > n {
			return Action{Err: err, Trip: true}
		}
		return Action{}
	})
}

// ShortWriteNth makes the n-th write (1-based) write only half its bytes
// and return io.ErrShortWrite.
func (f *FaultFS) ShortWriteNth(n int) {
	f.Add(func(op Op, i int) Action {
		return Action{Short: op.Kind == OpWrite && i == n}
	})
}

// Trip makes every later operation fail with err (ErrInjected if nil).
func (f *FaultFS) Trip(err error) {
	if err == nil {
		err = ErrInjected
	}
	f.mu.Lock()
	f.tripped = err
	f.mu.Unlock()
}

// Ops returns how many mutating operations have been attempted.
func (f *FaultFS) Ops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

// check counts a mutating operation and returns what to do with it; a
// non-nil Err is already wrapped.
func (f *FaultFS) check(kind OpKind, name string) Action {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tripped != nil {
		return Action{Err: wrapFault(kind, name, f.tripped)}
	}
	f.seq++
	f.counts[kind]++
	op := Op{Kind: kind, Path: name, Seq: f.seq}
	for _, fault := range f.faults {
		a := fault(op, f.counts[kind])
		if a.Trip {
			if a.Err == nil {
				a.Err = ErrInjected
			}
			f.tripped = a.Err
		}
		if a.Err != nil {
			return Action{Err: wrapFault(kind, name, a.Err)}
		}
		if a.Short {
			return a
		}
	}
	return Action{}
}

// checkRead fails a non-mutating operation once tripped.
func (f *FaultFS) checkRead(op, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tripped != nil {
		return fmt.Errorf("vfs: %s %q: %w", op, name, f.tripped)
	}
	return nil
}

func wrapFault(kind OpKind, name string, err error) error {
	return fmt.Errorf("vfs: %s %q: %w", kind, name, err)
}

// OpenFile opens through the inner FS; with O_CREATE or O_TRUNC it counts as
// an OpCreate.
func (f *FaultFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		if a := f.check(OpCreate, name); a.Err != nil {
			return nil, a.Err
		}
	} else if err := f.checkRead("open", name); err != nil {
		return nil, err
	}
	file, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{fs: f, File: file}, nil
}

// Rename renames through the inner FS.
func (f *FaultFS) Rename(oldname, newname string) error {
	if a := f.check(OpRename, oldname); a.Err != nil {
		return a.Err
	}
	return f.inner.Rename(oldname, newname)
}

// Remove removes through the inner FS.
func (f *FaultFS) Remove(name string) error {
	if a := f.check(OpRemove, name); a.Err != nil {
		return a.Err
	}
	return f.inner.Remove(name)
}

// MkdirAll creates directories through the inner FS.
func (f *FaultFS) MkdirAll(name string, perm fs.FileMode) error {
	if a := f.check(OpMkdir, name); a.Err != nil {
		return a.Err
	}
	return f.inner.MkdirAll(name, perm)
}

// ReadDir lists through the inner FS.
func (f *FaultFS) ReadDir(name string) ([]string, error) {
	if err := f.checkRead("readdir", name); err != nil {
		return nil, err
	}
	return f.inner.ReadDir(name)
}

// Stat stats through the inner FS.
func (f *FaultFS) Stat(name string) (fs.FileInfo, error) {
	if err := f.checkRead("stat", name); err != nil {
		return nil, err
	}
	return f.inner.Stat(name)
}

// SyncDir syncs through the inner FS.
func (f *FaultFS) SyncDir(dir string) error {
	if a := f.check(OpSyncDir, dir); a.Err != nil {
		return a.Err
	}
	return f.inner.SyncDir(dir)
}

type faultFile struct {
	fs *FaultFS
	File
}

func (f *faultFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.checkRead("read", f.Name()); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	a := f.fs.check(OpWrite, f.Name())
	if a.Err != nil {
		return 0, a.Err
	}
	if a.Short && len(p) > 0 {
		n, err := f.File.WriteAt(p[:len(p)/2], off)
		if err != nil {
			return n, err
		}
		return n, fmt.Errorf("vfs: write %q: %w", f.Name(), io.ErrShortWrite)
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if a := f.fs.check(OpSync, f.Name()); a.Err != nil {
		return a.Err
	}
	return f.File.Sync()
}

func (f *faultFile) Truncate(size int64) error {
	if a := f.fs.check(OpTruncate, f.Name()); a.Err != nil {
		return a.Err
	}
	return f.File.Truncate(size)
}

func (f *faultFile) Size() (int64, error) {
	if err := f.fs.checkRead("stat", f.Name()); err != nil {
		return 0, err
	}
	return f.File.Size()
}
