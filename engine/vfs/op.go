package vfs

import (
	"errors"
	"fmt"
)

// OpKind names a mutating file system operation, as seen by CrashFS's OnOp
// hook and matched by FaultFS.
type OpKind int

// The mutating operations. OpCreate is an OpenFile with O_CREATE or O_TRUNC.
const (
	OpCreate OpKind = iota + 1
	OpWrite
	OpSync
	OpTruncate
	OpRename
	OpRemove
	OpMkdir
	OpSyncDir
)

var opNames = map[OpKind]string{
	OpCreate:   "create",
	OpWrite:    "write",
	OpSync:     "sync",
	OpTruncate: "truncate",
	OpRename:   "rename",
	OpRemove:   "remove",
	OpMkdir:    "mkdir",
	OpSyncDir:  "syncdir",
}

func (k OpKind) String() string {
	if s, ok := opNames[k]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", int(k))
}

// Op describes one mutating operation.
type Op struct {
	Kind OpKind
	// Path is the file or directory operated on (the source of a rename).
	Path string
	// Seq numbers the mutating operations of one file system from 1, in the
	// order they were started.
	Seq int
}

func (o Op) String() string { return fmt.Sprintf("#%d %s %q", o.Seq, o.Kind, o.Path) }

var (
	// ErrCrashed is returned by every operation of a CrashFS, and of the
	// files opened through it, once it has crashed: the process that used it
	// is dead.
	ErrCrashed = errors.New("vfs: file system crashed")
	// ErrInjected is the default error FaultFS returns.
	ErrInjected = errors.New("vfs: injected fault")
	// ErrUnsupported is returned by CrashFS for operations it does not model
	// (renaming a directory, O_APPEND, opening a directory as a file).
	ErrUnsupported = errors.New("vfs: operation not supported by crashfs")
)
