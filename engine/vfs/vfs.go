// Package vfs is the file system seam of the data plane. The journal writes
// through it so that tests can run it on a file system that loses everything
// not yet synced at a chosen instant (see CrashFS).
package vfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// File is an open file. ReadAt and WriteAt are safe for concurrent use.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data and size durable (fdatasync or fsync). It
	// does not make the file's directory entry durable; see FS.SyncDir.
	Sync() error
	// Truncate changes the size; the new size is durable after Sync.
	Truncate(size int64) error
	// Stat returns the current (not necessarily durable) size.
	Size() (int64, error)
	Name() string
}

// FS is the subset of file system operations the data plane needs. Durability
// follows POSIX: data is durable after File.Sync, a create, rename or remove
// is durable after SyncDir of the parent directory.
type FS interface {
	// OpenFile opens name with os.O_* flags and permission perm.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Remove deletes a file or an empty directory.
	Remove(name string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(name string, perm fs.FileMode) error
	// ReadDir lists the names in a directory, sorted.
	ReadDir(name string) ([]string, error)
	// Stat reports whether name exists and its size.
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes creates, renames and removes in dir durable.
	SyncDir(dir string) error
}

// OS is the real file system.
type OS struct{}

var _ FS = OS{}

type osFile struct {
	*os.File
	direct directFile
}

var _ DirectIO = (*osFile)(nil)

// Sync is fdatasync: data and the size needed to read it back, without the
// timestamps fsync would also write.
func (f *osFile) Sync() error {
	rc, err := f.File.SyscallConn()
	if err != nil {
		return err // os.ErrClosed after Close
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		// Control fails only on a closed descriptor.
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: os.ErrClosed}
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

func (f *osFile) Size() (int64, error) {
	st, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// OpenFile opens a real file.
func (OS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &osFile{File: f}, nil
}

// Close closes the file and its direct descriptor, if one was opened.
func (f *osFile) Close() error {
	err := f.File.Close()
	if derr := f.direct.close(); err == nil {
		err = derr
	}
	return err
}

// Rename renames a real file.
func (OS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove removes a real file.
func (OS) Remove(name string) error { return os.Remove(name) }

// MkdirAll creates real directories.
func (OS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }

// ReadDir lists a real directory.
func (OS) ReadDir(name string) ([]string, error) {
	ents, err := os.ReadDir(name)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// Stat stats a real file.
func (OS) Stat(name string) (fs.FileInfo, error) { return os.Stat(name) }

// SyncDir fsyncs a real directory.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFileAtomic writes data to name so that after a crash name holds either
// its old content or data, never a mix: temp file, sync, rename, sync dir.
func WriteFileAtomic(fsys FS, name string, data []byte, perm fs.FileMode) error {
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}

// ReadFile reads a whole file.
func ReadFile(fsys FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	// The file may have shrunk since Size: keep only what was read.
	got, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:got], nil
}

// MkdirAllDurable creates dir and its parents and makes the new entries
// durable by syncing every directory from dir's parent up to the root.
func MkdirAllDurable(fsys FS, dir string, perm fs.FileMode) error {
	if err := fsys.MkdirAll(dir, perm); err != nil {
		return err
	}
	for d := dir; ; {
		p := filepath.Dir(d)
		if err := fsys.SyncDir(p); err != nil {
			return err
		}
		if p == d || p == "/" || p == "." {
			return nil
		}
		d = p
	}
}
