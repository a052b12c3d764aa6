package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-io/lockstep/engine/clock"
	"github.com/lockstep-io/lockstep/engine/index"
	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Options configure a Store.
type Options struct {
	FS    vfs.FS
	Clock clock.Clock
	// SegmentSize of the journal (default 64 MiB).
	SegmentSize int64
	// JournalCache is the bytes of the most recent journal writes kept in
	// memory to serve reads (0: none; see journal.Options.Cache).
	JournalCache int64
	// IndexMemoryLimit is each volume's in-memory index budget; beyond it
	// the index spills to disk (default 64 MiB).
	IndexMemoryLimit int64
	Logger           *slog.Logger
}

// Errors callers may test for.
var (
	ErrNotFound    = errors.New("store: no such volume")
	ErrExists      = errors.New("store: volume exists")
	ErrOutOfWindow = errors.New("store: point in time is outside the journal window and not a retained marker")
	ErrInUse       = errors.New("store: volume is in use")
)

// Store is an open data directory. All methods are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *journal.Log

	mu      sync.Mutex // guards everything below and state changes
	st      *state
	vols    map[uint32]*Volume
	byName  map[string]*Volume
	markers map[string]*Marker // by ID
	closed  bool

	segMu   sync.Mutex                  // guards segVols, written inside the journal's append order
	segVols map[uint64]map[uint32]int64 // segment -> volume -> newest timestamp

	foldMu sync.Mutex // one fold at a time

	// fenceMu orders fencing against markers: Mark holds it shared from
	// its fence check through its append, SetFenced exclusively.
	fenceMu sync.RWMutex
}

// VolumeSpec describes a new volume.
type VolumeSpec struct {
	Name         string
	Size         int64 // bytes, a multiple of BlockSize
	BlockSize    int   // 512 or 4096
	WriteThrough bool  // every write durable on return
}

var volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// Open opens or creates the data directory dir, finishing any fold that a
// crash interrupted and rebuilding the point-in-time index from the journal.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	if opts.FS == nil {
		opts.FS = vfs.OS{}
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := vfs.MkdirAllDurable(opts.FS, path.Join(dir, "volumes"), 0o750); err != nil {
		return nil, fmt.Errorf("store %q: %w", dir, err)
	}
	st, err := loadState(opts.FS, dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, opts: opts, st: st, vols: map[uint32]*Volume{}, byName: map[string]*Volume{},
		markers: map[string]*Marker{}, segVols: map[uint64]map[uint32]int64{}}
	for i := range st.Markers {
		m := st.Markers[i]
		s.markers[m.ID] = &m
	}
	for _, vs := range st.Volumes {
		if err := s.openVolume(vs); err != nil {
			s.closeVolumes()
			return nil, err
		}
	}
	for _, v := range s.vols {
		if v.st.ParentID != 0 {
			p := s.vols[v.st.ParentID]
			if p == nil {
				s.closeVolumes()
				return nil, fmt.Errorf("store %q: clone %q: parent volume id %d is missing", dir, v.name, v.st.ParentID)
			}
			v.parent = p
			p.pin(v.st.ParentAt)
		}
	}
	lg, rep, err := journal.Open(ctx, path.Join(dir, "wal"), journal.Options{FS: opts.FS, Clock: &floorClock{c: opts.Clock, floor: st.LastTS}, SegmentSize: opts.SegmentSize, Cache: opts.JournalCache, Logger: opts.Logger},
		func(rec *journal.Record, loc journal.Loc) error { return s.replay(rec, loc) })
	if err != nil {
		s.closeVolumes()
		return nil, fmt.Errorf("store %q: %w", dir, err)
	}
	s.log = lg
	for _, d := range rep.Truncated {
		opts.Logger.Warn("store: journal torn tail cut at open", "damage", d.String())
	}
	for _, v := range s.vols {
		if v.st.Intent != nil {
			if err := s.finishFold(ctx, v); err != nil {
				s.Close()
				return nil, fmt.Errorf("store %q: finish interrupted fold of %q: %w", dir, v.name, err)
			}
		}
	}
	if err := s.removeStrayFiles(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// floorClock never returns a time before floor, so timestamps stay monotonic
// across restarts even when the journal is empty.
type floorClock struct {
	c     clock.Clock
	floor int64
}

func (f *floorClock) Now() time.Time {
	t := f.c.Now()
	if t.UnixNano() <= f.floor {
		return time.Unix(0, f.floor+1)
	}
	return t
}

func (s *Store) replay(rec *journal.Record, loc journal.Loc) error {
	if rec.Type == journal.TypeMarker {
		m := s.markerFromRecord(rec)
		s.markers[m.ID] = m
		return nil
	}
	s.noteSegment(loc.Segment(), rec.Volume, rec.TS)
	v := s.vols[rec.Volume]
	if v == nil || rec.TS <= v.st.FoldThrough {
		return nil // deleted volume, or already in the base
	}
	return v.indexRecord(rec.Type, rec.Offset, int64(rec.Length), rec.TS, loc)
}

func (s *Store) noteSegment(seg uint64, vol uint32, ts int64) {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	m := s.segVols[seg]
	if m == nil {
		m = map[uint32]int64{}
		s.segVols[seg] = m
	}
	if ts > m[vol] {
		m[vol] = ts
	}
}

func (s *Store) volDir(id uint32) string { return path.Join(s.dir, "volumes", fmt.Sprint(id)) }

func (s *Store) openVolume(vs *volumeState) error {
	d := s.volDir(vs.ID)
	if err := vfs.MkdirAllDurable(s.opts.FS, d, 0o750); err != nil {
		return fmt.Errorf("volume %q: %w", vs.Name, err)
	}
	base, err := s.opts.FS.OpenFile(path.Join(d, "base.img"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("volume %q: open base: %w", vs.Name, err)
	}
	// The base's size must be durable before anything relies on it: a
	// power loss must not shrink it (or tear it) under the fold's writes.
	if sz, err := base.Size(); err == nil && sz != vs.Size {
		if err := base.Truncate(vs.Size); err != nil {
			base.Close()
			return fmt.Errorf("volume %q: size base: %w", vs.Name, err)
		}
		if err := base.Sync(); err != nil {
			base.Close()
			return fmt.Errorf("volume %q: sync base: %w", vs.Name, err)
		}
		if err := s.opts.FS.SyncDir(d); err != nil {
			base.Close()
			return fmt.Errorf("volume %q: sync %s: %w", vs.Name, d, err)
		}
	}
	idx, err := index.New(index.Options{MemoryLimit: indexLimit(s.opts.IndexMemoryLimit, vs.Size/int64(vs.BlockSize)), Dir: path.Join(d, "index"), FS: s.opts.FS})
	if err != nil {
		base.Close()
		return fmt.Errorf("volume %q: index: %w", vs.Name, err)
	}
	v := &Volume{s: s, id: vs.ID, name: vs.Name, st: vs, base: base, idx: idx, bs: vs.BlockSize, pins: map[int64]int{}}
	for _, ref := range vs.Snaps {
		ss, err := openSnapSet(s.opts.FS, path.Join(d, ref.File), vs.BlockSize)
		if err != nil {
			v.close()
			return fmt.Errorf("volume %q: %w", vs.Name, err)
		}
		v.snaps = append(v.snaps, ss)
	}
	if vs.ParentID != 0 {
		pr, err := loadPresent(s.opts.FS, path.Join(d, "present"), vs.Size/int64(vs.BlockSize))
		if err != nil {
			v.close()
			return fmt.Errorf("volume %q: %w", vs.Name, err)
		}
		v.present = pr
	}
	s.vols[vs.ID] = v
	s.byName[vs.Name] = v
	return nil
}

// indexLimit scales a volume's index budget to its size: the index
// preallocates part of its budget, and a small volume (a test, a scratch
// clone) needs far less than a database volume. Eight versions of every
// block stay in memory before anything spills; the configured limit caps it.
func indexLimit(limit, blocks int64) int64 {
	if limit <= 0 {
		limit = index.DefaultMemoryLimit
	}
	return min(limit, max(256<<10, blocks*8*24))
}

// removeStrayFiles deletes snapshot sets no state references (a fold that
// crashed before recording its intent) and temporary files.
func (s *Store) removeStrayFiles() error {
	for id, v := range s.vols {
		d := s.volDir(id)
		names, err := s.opts.FS.ReadDir(d)
		if err != nil {
			return fmt.Errorf("volume %q: %w", v.name, err)
		}
		used := map[string]bool{}
		for _, r := range v.st.Snaps {
			used[r.File] = true
		}
		for _, n := range names {
			if (strings.HasPrefix(n, "snap-") && !used[n]) || strings.HasSuffix(n, ".tmp") {
				if err := s.opts.FS.Remove(path.Join(d, n)); err != nil {
					return fmt.Errorf("volume %q: remove stray %s: %w", v.name, n, err)
				}
			}
		}
	}
	return nil
}

// CreateVolume creates an empty (all zeros) volume.
func (s *Store) CreateVolume(ctx context.Context, spec VolumeSpec) (*Volume, error) {
	if !volumeName.MatchString(spec.Name) {
		return nil, fmt.Errorf("store: volume name %q: want 1-128 letters, digits, '.', '_', ':', '/' or '-'", spec.Name)
	}
	if spec.BlockSize != 512 && spec.BlockSize != 4096 {
		return nil, fmt.Errorf("store: volume %q: block size %d, want 512 or 4096", spec.Name, spec.BlockSize)
	}
	if spec.Size <= 0 || spec.Size%int64(spec.BlockSize) != 0 {
		return nil, fmt.Errorf("store: volume %q: size %d is not a positive multiple of the block size %d", spec.Name, spec.Size, spec.BlockSize)
	}
	return s.addVolume(ctx, &volumeState{Name: spec.Name, Size: spec.Size, BlockSize: spec.BlockSize, WriteThrough: spec.WriteThrough})
}

func (s *Store) addVolume(ctx context.Context, vs *volumeState) (*Volume, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("store: closed")
	}
	if _, ok := s.byName[vs.Name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrExists, vs.Name)
	}
	vs.ID = s.st.NextVolumeID
	// The volume's history starts now: earlier points read as "outside
	// the window", not as zeros.
	vs.Created = s.log.Tick()
	vs.FoldThrough = vs.Created
	next := *s.st
	next.NextVolumeID++
	next.Volumes = append(append([]*volumeState(nil), s.st.Volumes...), vs)
	next.LastTS = s.log.LastTS()
	if err := s.openVolume(vs); err != nil {
		return nil, err
	}
	if vs.ParentID != 0 {
		// Before anyone can find the clone by name, or it would read zeros.
		s.vols[vs.ID].parent = s.vols[vs.ParentID]
	}
	if err := saveState(s.opts.FS, s.dir, &next); err != nil {
		v := s.vols[vs.ID]
		delete(s.vols, vs.ID)
		delete(s.byName, vs.Name)
		v.close()
		return nil, err
	}
	s.st = &next
	return s.vols[vs.ID], nil
}

// Volume returns the named volume.
func (s *Store) Volume(name string) (*Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.byName[name]
	if v == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return v, nil
}

// VolumeInfo describes a volume.
type VolumeInfo struct {
	Name         string `json:"name"`
	Size         int64  `json:"size"`
	BlockSize    int    `json:"block_size"`
	WriteThrough bool   `json:"write_through"`
	Parent       string `json:"parent,omitempty"`
	ParentAt     int64  `json:"parent_at,omitempty"`
	// FoldThrough is the oldest point of the journal window.
	FoldThrough int64 `json:"fold_through"`
	// Retained lists the retained points older than the window.
	Retained []int64 `json:"retained,omitempty"`
}

// Volumes lists the volumes by name.
func (s *Store) Volumes() []VolumeInfo {
	s.mu.Lock()
	vols := make([]*Volume, 0, len(s.vols))
	for _, v := range s.vols {
		vols = append(vols, v)
	}
	s.mu.Unlock()
	out := make([]VolumeInfo, 0, len(vols))
	for _, v := range vols {
		out = append(out, v.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeleteVolume removes a volume and its history. It refuses while clones of
// it exist.
func (s *Store) DeleteVolume(ctx context.Context, name string) error {
	s.foldMu.Lock()
	defer s.foldMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.byName[name]
	if v == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	for _, o := range s.vols {
		if o.parent == v {
			return fmt.Errorf("%w: %q has clone %q; delete the clone first", ErrInUse, name, o.name)
		}
	}
	next := *s.st
	next.Volumes = nil
	for _, vs := range s.st.Volumes {
		if vs.ID != v.id {
			next.Volumes = append(next.Volumes, vs)
		}
	}
	next.LastTS = s.log.LastTS()
	if err := saveState(s.opts.FS, s.dir, &next); err != nil {
		return err
	}
	s.st = &next
	delete(s.vols, v.id)
	delete(s.byName, name)
	v.markDeleted()
	if v.parent != nil {
		v.parent.unpin(v.st.ParentAt)
	}
	d := s.volDir(v.id)
	names, _ := s.opts.FS.ReadDir(d)
	for _, n := range names {
		if n != "index" {
			s.opts.FS.Remove(path.Join(d, n))
		}
	}
	s.opts.FS.Remove(d)
	return nil
}

// Sync makes every write that returned so far durable, on every volume.
func (s *Store) Sync(ctx context.Context) error { return s.log.SyncAll(ctx) }

// Journal exposes the journal for verification and statistics.
func (s *Store) Journal() *journal.Log { return s.log }

// Dir is the data directory.
func (s *Store) Dir() string { return s.dir }

// Close syncs and closes everything.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	var err error
	if s.log != nil {
		err = s.log.Close()
	}
	s.closeVolumes()
	return err
}

func (s *Store) closeVolumes() {
	for _, v := range s.vols {
		v.close()
	}
}
