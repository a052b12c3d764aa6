package store

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/index"
	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

// latest reads the current state.
const latest = math.MaxInt64

// locZero marks an index entry whose block reads as zeros (unmap, write same).
const locZero = ^uint64(0)

// Volume is a journaled block device. It implements blockdev.Device.
type Volume struct {
	s    *Store
	id   uint32
	name string
	bs   int
	base vfs.File
	idx  *index.Index

	parent  *Volume // clones: reads fall through to parent at st.ParentAt
	present *bitmap // clones: base blocks that are the clone's own

	// mu excludes the fold's switch of fold point and sets from readers.
	mu    sync.RWMutex
	st    *volumeState
	snaps []*snapSet
	// A running fold's target and kept points: a view may not pin a point
	// the fold is about to fold away.
	foldingTo   int64
	foldingKeep map[int64]bool

	pinMu sync.Mutex
	pins  map[int64]int

	fenced  atomic.Bool
	deleted atomic.Bool
	idxErr  atomic.Pointer[error]
}

var _ blockdev.Device = (*Volume)(nil)

// Name is the volume's name.
func (v *Volume) Name() string { return v.name }

// ID implements blockdev.Device.
func (v *Volume) ID() string { return fmt.Sprintf("lockstep-%d-%s", v.id, v.name) }

// BlockSize implements blockdev.Device.
func (v *Volume) BlockSize() int { return v.bs }

// Size implements blockdev.Device.
func (v *Volume) Size() int64 { return v.st.Size }

// ReadOnly implements blockdev.Device.
func (v *Volume) ReadOnly() bool { return false }

// SetFenced makes every I/O fail with blockdev.ErrFenced while a restore
// rolls the volume, and makes Mark refuse markers naming it: a marker in the
// middle of a roll would record a half-restored point. A Mark already past
// its check finishes before SetFenced returns.
func (v *Volume) SetFenced(on bool) {
	v.s.fenceMu.Lock()
	v.fenced.Store(on)
	v.s.fenceMu.Unlock()
}

// Fenced reports whether the volume is fenced.
func (v *Volume) Fenced() bool { return v.fenced.Load() }

// Info describes the volume.
func (v *Volume) Info() VolumeInfo {
	v.mu.RLock()
	defer v.mu.RUnlock()
	vi := VolumeInfo{Name: v.name, Size: v.st.Size, BlockSize: v.bs, WriteThrough: v.st.WriteThrough, FoldThrough: v.st.FoldThrough}
	if v.parent != nil {
		vi.Parent, vi.ParentAt = v.parent.name, v.st.ParentAt
	}
	for _, s := range v.snaps {
		vi.Retained = append(vi.Retained, s.at)
	}
	return vi
}

func (v *Volume) check(off, n int64) error {
	if v.deleted.Load() {
		return fmt.Errorf("volume %q: %w", v.name, blockdev.ErrClosed)
	}
	if off%int64(v.bs) != 0 || n%int64(v.bs) != 0 {
		return fmt.Errorf("volume %q: offset %d length %d: %w", v.name, off, n, blockdev.ErrUnaligned)
	}
	if off < 0 || off+n > v.st.Size {
		return fmt.Errorf("volume %q: offset %d length %d, size %d: %w", v.name, off, n, v.st.Size, blockdev.ErrOutOfRange)
	}
	if p := v.idxErr.Load(); p != nil {
		return fmt.Errorf("volume %q: index failed: %w", v.name, *p)
	}
	return nil
}

var (
	_ blockdev.Provisioner  = (*Volume)(nil)
	_ blockdev.AtomicWriter = (*Volume)(nil)
)

// AtomicWriteMax implements blockdev.AtomicWriter: a write of up to one
// journal record is one checksummed record with one timestamp, so replay
// after a crash (which cuts a torn record) and every point-in-time read
// see all of it or none.
func (v *Volume) AtomicWriteMax() int { return journal.MaxWrite }

// WriteAt implements blockdev.Device: the write is journaled and visible at
// once, durable at the next Flush, or on return with fua or write-through.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	if v.fenced.Load() {
		return fmt.Errorf("volume %q: %w", v.name, blockdev.ErrFenced)
	}
	var seq uint64
	for len(p) > 0 {
		n := min(len(p), journal.MaxWrite)
		var err error
		seq, err = v.append(&journal.Record{Type: journal.TypeWrite, Volume: v.id, Offset: off, Length: uint32(n), Data: p[:n]})
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return v.durable(ctx, seq, fua)
}

// WriteZeroes implements blockdev.Device.
func (v *Volume) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	return v.zeroRange(ctx, journal.TypeZero, off, length, fua)
}

// Unmap implements blockdev.Device. The unmap is journaled: reads at earlier
// times still see the data.
func (v *Volume) Unmap(ctx context.Context, off, length int64) error {
	return v.zeroRange(ctx, journal.TypeUnmap, off, length, false)
}

func (v *Volume) zeroRange(ctx context.Context, t journal.RecordType, off, length int64, fua bool) error {
	if err := v.check(off, length); err != nil {
		return err
	}
	if v.fenced.Load() {
		return fmt.Errorf("volume %q: %w", v.name, blockdev.ErrFenced)
	}
	var seq uint64
	for length > 0 {
		n := min(length, 1<<30)
		var err error
		if seq, err = v.append(&journal.Record{Type: t, Volume: v.id, Offset: off, Length: uint32(n)}); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return v.durable(ctx, seq, fua)
}

func (v *Volume) durable(ctx context.Context, seq uint64, fua bool) error {
	if fua || v.st.WriteThrough {
		if err := v.s.log.Sync(ctx, seq); err != nil {
			return fmt.Errorf("volume %q: %w", v.name, err)
		}
	}
	return nil
}

func (v *Volume) append(rec *journal.Record) (uint64, error) {
	seq, _, err := v.s.log.Append(rec, func(_ uint64, ts int64, loc journal.Loc) {
		v.s.noteSegment(loc.Segment(), v.id, ts)
		if err := v.indexRecord(rec.Type, rec.Offset, int64(rec.Length), ts, loc); err != nil {
			v.idxErr.CompareAndSwap(nil, &err)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("volume %q: %w", v.name, err)
	}
	if p := v.idxErr.Load(); p != nil {
		return 0, fmt.Errorf("volume %q: index failed: %w", v.name, *p)
	}
	return seq, nil
}

func (v *Volume) indexRecord(t journal.RecordType, off, length, ts int64, loc journal.Loc) error {
	bs := int64(v.bs)
	first, n := uint64(off/bs), length/bs
	ents := make([]index.Entry, n)
	for i := range ents {
		e := index.Entry{Block: first + uint64(i), TS: ts, Loc: locZero}
		if t == journal.TypeWrite {
			e.Loc = uint64(loc.Add(journal.DataOffset + int64(i)*bs))
		}
		ents[i] = e
	}
	return v.idx.Add(ents...)
}

// Flush implements blockdev.Device.
func (v *Volume) Flush(ctx context.Context) error {
	if v.deleted.Load() {
		return fmt.Errorf("volume %q: %w", v.name, blockdev.ErrClosed)
	}
	if err := v.s.log.SyncAll(ctx); err != nil {
		return fmt.Errorf("volume %q: %w", v.name, err)
	}
	return nil
}

// ReadAt implements blockdev.Device: the current content.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	if v.fenced.Load() {
		return fmt.Errorf("volume %q: %w", v.name, blockdev.ErrFenced)
	}
	return v.readAt(p, off, latest)
}

// Provisioning implements blockdev.Provisioner for the current content.
func (v *Volume) Provisioning(ctx context.Context, off, length int64) (blockdev.Provisioning, int64, error) {
	if v.fenced.Load() {
		return blockdev.Unknown, 0, fmt.Errorf("volume %q: %w", v.name, blockdev.ErrFenced)
	}
	return v.provisioning(off, length, latest)
}

// ReadAtTime reads the content the volume had at timestamp at (Unix ns).
func (v *Volume) ReadAtTime(ctx context.Context, p []byte, off, at int64) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	return v.readAt(p, off, at)
}

type srcKind uint8

const (
	srcLog srcKind = iota
	srcZero
	srcOlder // base, or snapshot sets for a retained point
)

func (v *Volume) source(b uint64, at, fold int64) (srcKind, uint64, error) {
	var e index.Entry
	var ok bool
	var err error
	if at == latest {
		e, ok, err = v.idx.Newest(b)
	} else {
		e, ok, err = v.idx.Lookup(b, at)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("volume %q: index lookup of block %d: %w", v.name, b, err)
	}
	if !ok || e.TS <= fold {
		return srcOlder, 0, nil
	}
	if e.Loc == locZero {
		return srcZero, 0, nil
	}
	return srcLog, e.Loc, nil
}

func (v *Volume) readAt(p []byte, off, at int64) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	fold := v.st.FoldThrough
	snap := -1
	if at < fold {
		if snap = v.snapIndex(at); snap < 0 {
			return fmt.Errorf("volume %q at %d (window starts %d): %w", v.name, at, fold, ErrOutOfWindow)
		}
	}
	bs := int64(v.bs)
	first := uint64(off / bs)
	nb := len(p) / v.bs
	for i := 0; i < nb; {
		kind, loc, err := v.source(first+uint64(i), at, fold)
		if err != nil {
			return err
		}
		j := i + 1
		for ; j < nb; j++ {
			k2, l2, err := v.source(first+uint64(j), at, fold)
			if err != nil {
				return err
			}
			if k2 != kind || (kind == srcLog && l2 != loc+uint64(j-i)*uint64(bs)) {
				break
			}
		}
		dst := p[int64(i)*bs : int64(j)*bs]
		switch kind {
		case srcZero:
			clear(dst)
		case srcLog:
			if err := v.s.log.ReadData(journal.Loc(loc), dst); err != nil {
				return fmt.Errorf("volume %q: %w", v.name, err)
			}
		case srcOlder:
			if snap >= 0 {
				for k := i; k < j; k++ {
					if err := v.readSnapChain(p[int64(k)*bs:int64(k+1)*bs], first+uint64(k), snap); err != nil {
						return err
					}
				}
			} else if err := v.readBase(dst, first+uint64(i)); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// provisioning implements blockdev.Provisioner at timestamp at from the
// index alone: a block whose newest record is a write is mapped, one
// unmapped or zeroed is deallocated, one that comes from the base image or
// a retained point is unknown (the caller reads it).
func (v *Volume) provisioning(off, length, at int64) (blockdev.Provisioning, int64, error) {
	if err := v.check(off, length); err != nil {
		return blockdev.Unknown, 0, err
	}
	if length == 0 {
		return blockdev.Unknown, 0, fmt.Errorf("volume %q: provisioning of no block: %w", v.name, blockdev.ErrOutOfRange)
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	fold := v.st.FoldThrough
	state := func(b uint64) (blockdev.Provisioning, error) {
		kind, _, err := v.source(b, at, fold)
		switch {
		case err != nil:
			return blockdev.Unknown, err
		case kind == srcLog:
			return blockdev.Mapped, nil
		case kind == srcZero:
			return blockdev.Deallocated, nil
		}
		return blockdev.Unknown, nil
	}
	bs := int64(v.bs)
	first, nb := uint64(off/bs), uint64(length/bs)
	p, err := state(first)
	if err != nil {
		return blockdev.Unknown, 0, err
	}
	n := uint64(1)
	for ; n < nb; n++ {
		q, err := state(first + n)
		if err != nil {
			return blockdev.Unknown, 0, err
		}
		if q != p {
			break
		}
	}
	return p, int64(n) * bs, nil
}

func (v *Volume) snapIndex(at int64) int {
	i := sort.Search(len(v.snaps), func(i int) bool { return v.snaps[i].at >= at })
	if i < len(v.snaps) && v.snaps[i].at == at {
		return i
	}
	return -1
}

func (v *Volume) readSnapChain(p []byte, b uint64, from int) error {
	for j := from; j < len(v.snaps); j++ {
		if k, ok := v.snaps[j].find(b); ok {
			if err := v.snaps[j].read(k, p); err != nil {
				return fmt.Errorf("volume %q: %w", v.name, err)
			}
			return nil
		}
	}
	return v.readBase(p, b)
}

// readBase reads blocks from the base image; for a clone, blocks it never
// folded come from the parent at the clone's point.
func (v *Volume) readBase(p []byte, first uint64) error {
	bs := int64(v.bs)
	if v.parent == nil {
		if _, err := v.base.ReadAt(p, int64(first)*bs); err != nil {
			return fmt.Errorf("volume %q: read base: %w", v.name, err)
		}
		return nil
	}
	nb := len(p) / v.bs
	for i := 0; i < nb; {
		own := v.present.get(first + uint64(i))
		j := i + 1
		for j < nb && v.present.get(first+uint64(j)) == own {
			j++
		}
		dst := p[int64(i)*bs : int64(j)*bs]
		off := int64(first+uint64(i)) * bs
		if own {
			if _, err := v.base.ReadAt(dst, off); err != nil {
				return fmt.Errorf("volume %q: read base: %w", v.name, err)
			}
		} else if err := v.parent.readAt(dst, off, v.st.ParentAt); err != nil {
			return fmt.Errorf("clone %q: %w", v.name, err)
		}
		i = j
	}
	return nil
}

func (v *Volume) pin(at int64) {
	v.pinMu.Lock()
	v.pins[at]++
	v.pinMu.Unlock()
}

func (v *Volume) unpin(at int64) {
	v.pinMu.Lock()
	if v.pins[at]--; v.pins[at] <= 0 {
		delete(v.pins, at)
	}
	v.pinMu.Unlock()
}

func (v *Volume) pinned() []int64 {
	v.pinMu.Lock()
	defer v.pinMu.Unlock()
	out := make([]int64, 0, len(v.pins))
	for at := range v.pins {
		out = append(out, at)
	}
	return out
}

// readable reports whether at can be read: inside the window or a retained
// point.
func (v *Volume) readable(at int64) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.foldingTo > 0 && at > v.st.FoldThrough && at < v.foldingTo && !v.foldingKeep[at] {
		return false
	}
	return at >= v.st.FoldThrough || v.snapIndex(at) >= 0
}

func (v *Volume) markDeleted() {
	v.deleted.Store(true)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.close()
}

func (v *Volume) close() {
	if v.base != nil {
		v.base.Close()
	}
	if v.idx != nil {
		v.idx.Close()
	}
	for _, s := range v.snaps {
		s.f.Close()
	}
}

// View is a read-only presentation of a volume at one point in time. It
// implements blockdev.Device and keeps that point readable until Close.
type View struct {
	v      *Volume
	at     int64
	closed atomic.Bool
}

var _ blockdev.Device = (*View)(nil)

// View presents the volume as it was at timestamp at. It costs the same
// whatever the volume's size: nothing is copied.
func (v *Volume) View(ctx context.Context, at int64) (*View, error) {
	if at >= v.s.log.LastTS() {
		at = v.s.log.LastTS()
	}
	// The view may include writes not yet durable; make them durable so the
	// view never shows what a crash could take back.
	if err := v.s.log.SyncAll(ctx); err != nil {
		return nil, err
	}
	v.pin(at)
	if !v.readable(at) {
		v.unpin(at)
		return nil, fmt.Errorf("volume %q at %d: %w", v.name, at, ErrOutOfWindow)
	}
	return &View{v: v, at: at}, nil
}

// At is the view's point in time.
func (w *View) At() int64 { return w.at }

// BlockSize implements blockdev.Device.
func (w *View) BlockSize() int { return w.v.bs }

// Size implements blockdev.Device.
func (w *View) Size() int64 { return w.v.st.Size }

// ReadOnly implements blockdev.Device.
func (w *View) ReadOnly() bool { return true }

// ID implements blockdev.Device.
func (w *View) ID() string { return fmt.Sprintf("%s@%d", w.v.ID(), w.at) }

// ReadAt implements blockdev.Device.
func (w *View) ReadAt(ctx context.Context, p []byte, off int64) error {
	if w.closed.Load() {
		return blockdev.ErrClosed
	}
	return w.v.ReadAtTime(ctx, p, off, w.at)
}

// WriteAt implements blockdev.Device: views are read-only.
func (w *View) WriteAt(context.Context, []byte, int64, bool) error { return blockdev.ErrReadOnly }

// Provisioning implements blockdev.Provisioner at the view's point.
func (w *View) Provisioning(ctx context.Context, off, length int64) (blockdev.Provisioning, int64, error) {
	if w.closed.Load() {
		return blockdev.Unknown, 0, blockdev.ErrClosed
	}
	return w.v.provisioning(off, length, w.at)
}

// WriteZeroes implements blockdev.Device: views are read-only.
func (w *View) WriteZeroes(context.Context, int64, int64, bool) error { return blockdev.ErrReadOnly }

// Unmap implements blockdev.Device: views are read-only.
func (w *View) Unmap(context.Context, int64, int64) error { return blockdev.ErrReadOnly }

// Flush implements blockdev.Device.
func (w *View) Flush(context.Context) error { return nil }

// Close releases the view's hold on its point in time.
func (w *View) Close() error {
	if w.closed.CompareAndSwap(false, true) {
		w.v.unpin(w.at)
	}
	return nil
}

// Clone creates a writable copy-on-write volume named name holding src's
// content at timestamp at. Its writes go to its own history; src's is never
// touched. Nothing is copied.
func (s *Store) Clone(ctx context.Context, src string, at int64, name string) (*Volume, error) {
	pv, err := s.Volume(src)
	if err != nil {
		return nil, err
	}
	view, err := pv.View(ctx, at)
	if err != nil {
		return nil, err
	}
	if !volumeName.MatchString(name) {
		view.Close()
		return nil, fmt.Errorf("store: clone name %q: want 1-128 letters, digits, '.', '_', ':', '/' or '-'", name)
	}
	cv, err := s.addVolume(ctx, &volumeState{Name: name, Size: pv.st.Size, BlockSize: pv.bs, WriteThrough: pv.st.WriteThrough, ParentID: pv.id, ParentAt: view.at})
	if err != nil {
		view.Close()
		return nil, err
	}
	// The view's pin becomes the clone's, released when the clone is deleted.
	return cv, nil
}

// RollTo rewrites, as new journaled writes, every block that changed after
// at with its content at at, so the volume reads as it did then while the
// history after at stays readable (a roll can itself be rolled back).
// It returns the bytes rewritten.
func (v *Volume) RollTo(ctx context.Context, at int64) (int64, error) {
	view, err := v.View(ctx, at)
	if err != nil {
		return 0, err
	}
	defer view.Close()
	blocks, err := v.changedSince(at)
	if err != nil {
		return 0, err
	}
	bs := int64(v.bs)
	buf := make([]byte, 0, 1<<20)
	var total int64
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 && int64(j-i)*bs < 1<<20 {
			j++
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n := int64(j-i) * bs
		buf = buf[:n]
		off := int64(blocks[i]) * bs
		if err := v.readAt(buf, off, view.at); err != nil {
			return total, err
		}
		if err := v.writeForRoll(ctx, buf, off); err != nil {
			return total, err
		}
		total += n
		i = j
	}
	return total, v.Flush(ctx)
}

// writeForRoll writes even while the volume is fenced: the roll is what
// the fence is for.
func (v *Volume) writeForRoll(ctx context.Context, p []byte, off int64) error {
	if err := v.check(off, int64(len(p))); err != nil {
		return err
	}
	_, err := v.append(&journal.Record{Type: journal.TypeWrite, Volume: v.id, Offset: off, Length: uint32(len(p)), Data: p})
	return err
}

// changedSince lists, sorted, the blocks written after at.
func (v *Volume) changedSince(at int64) ([]uint64, error) {
	v.mu.RLock()
	fold := v.st.FoldThrough
	set := map[uint64]struct{}{}
	if at < fold {
		for j := v.snapIndex(at); j >= 0 && j < len(v.snaps); j++ {
			for _, b := range v.snaps[j].blocks {
				set[b] = struct{}{}
			}
		}
		at = fold
	}
	v.mu.RUnlock()
	recent, err := v.changedIn(at, latest)
	if err != nil {
		return nil, err
	}
	for _, b := range recent {
		set[b] = struct{}{}
	}
	return sortedKeys(set), nil
}
