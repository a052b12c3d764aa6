package store

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"

	"github.com/lockstep-io/lockstep/engine/index"
	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

// FoldPlan says how far to fold one volume.
type FoldPlan struct {
	// Through: history at or before this timestamp is folded into the base;
	// the journal window starts after it.
	Through int64
	// Keep lists points older than Through (marker timestamps) that must
	// stay readable. Points already folded away cannot be brought back.
	Keep []int64
}

// FoldReport tells what a fold did.
type FoldReport struct {
	Volumes         map[string]VolumeFold `json:"volumes"`
	SegmentsRemoved int                   `json:"segments_removed"`
	BytesRemoved    int64                 `json:"bytes_removed"`
	MarkersExpired  int                   `json:"markers_expired"`
}

// VolumeFold is one volume's part of a fold.
type VolumeFold struct {
	From, Through int64
	Applied       int   // records applied to the base
	Retained      []int // entries of each retained set, oldest first
}

// Fold advances the fold point of each volume in plans, keeping the listed
// points readable, then deletes journal segments no volume needs. It is
// crash-safe at every step and runs alongside reads and writes.
func (s *Store) Fold(ctx context.Context, plans map[string]FoldPlan) (*FoldReport, error) {
	s.foldMu.Lock()
	defer s.foldMu.Unlock()
	// Only durable records are folded: the base must never hold a write a
	// crash could take back from the journal.
	limit := s.log.LastTS()
	if err := s.log.SyncAll(ctx); err != nil {
		return nil, err
	}
	rep := &FoldReport{Volumes: map[string]VolumeFold{}}
	names := make([]string, 0, len(plans))
	for n := range plans {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		v, err := s.Volume(name)
		if err != nil {
			return rep, err
		}
		plan := plans[name]
		plan.Through = min(plan.Through, limit)
		vf, err := s.foldVolume(ctx, v, plan)
		if err != nil {
			return rep, fmt.Errorf("fold volume %q: %w", name, err)
		}
		rep.Volumes[name] = vf
	}
	if err := s.expireMarkers(rep); err != nil {
		return rep, err
	}
	if err := s.removeFoldedSegments(rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// setSpec is a snapshot set to be: the union of parts, earlier parts taking
// precedence.
type setSpec struct {
	at    int64
	parts []setPart
}

type setPart struct {
	old    *snapSet // an existing set, or
	blocks []uint64 // blocks (sorted) whose data fetch returns
	fetch  func(b uint64, p []byte) error
}

func (p setPart) has(b uint64) bool {
	if p.old != nil {
		_, ok := p.old.find(b)
		return ok
	}
	i := sort.Search(len(p.blocks), func(i int) bool { return p.blocks[i] >= b })
	return i < len(p.blocks) && p.blocks[i] == b
}

func (p setPart) read(b uint64, buf []byte) error {
	if p.old != nil {
		i, _ := p.old.find(b)
		return p.old.read(i, buf)
	}
	return p.fetch(b, buf)
}

func (p setPart) list() []uint64 {
	if p.old != nil {
		return p.old.blocks
	}
	return p.blocks
}

func (sp *setSpec) reuses() *snapSet {
	if len(sp.parts) == 1 && sp.parts[0].old != nil {
		return sp.parts[0].old
	}
	return nil
}

func (sp *setSpec) blocks() []uint64 {
	set := map[uint64]struct{}{}
	for _, p := range sp.parts {
		for _, b := range p.list() {
			set[b] = struct{}{}
		}
	}
	return sortedKeys(set)
}

func sortedKeys(set map[uint64]struct{}) []uint64 {
	out := make([]uint64, 0, len(set))
	for b := range set {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (s *Store) foldVolume(ctx context.Context, v *Volume, plan FoldPlan) (VolumeFold, error) {
	v.mu.Lock()
	from := v.st.FoldThrough
	target := max(plan.Through, from)
	keep := map[int64]bool{}
	for _, k := range plan.Keep {
		keep[k] = true
	}
	// Views and clones hold their points.
	for _, k := range v.pinned() {
		keep[k] = true
	}
	v.foldingTo, v.foldingKeep = target, keep
	old := append([]*snapSet(nil), v.snaps...)
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.foldingTo, v.foldingKeep = 0, nil
		v.mu.Unlock()
	}()
	vf := VolumeFold{From: from, Through: target}

	// Expired sets merge into the previous retained one (or vanish).
	var specs []*setSpec
	changed := false
	for _, ss := range old {
		switch {
		case keep[ss.at]:
			specs = append(specs, &setSpec{at: ss.at, parts: []setPart{{old: ss}}})
		case len(specs) > 0:
			last := specs[len(specs)-1]
			last.parts = append(last.parts, setPart{old: ss})
			changed = true
		default:
			changed = true
		}
	}
	var points []int64
	for k := range keep {
		if k >= from && k < target {
			points = append(points, k)
		}
	}
	sort.Slice(points, func(i, j int) bool { return points[i] < points[j] })
	if target == from && !changed {
		return vf, nil
	}
	bs := v.bs
	readOld := func(b uint64, p []byte) error { return v.readBase(p, b) }
	if len(specs) > 0 && target > from {
		// The newest retained set must also cover blocks changed between
		// the old fold point and the next boundary: their content at its
		// point is what the base holds now.
		next := target
		if len(points) > 0 {
			next = points[0]
		}
		last := specs[len(specs)-1]
		blocks, err := v.changedIn(from, next)
		if err != nil {
			return vf, err
		}
		var extra []uint64
		for _, b := range blocks {
			covered := false
			for _, p := range last.parts {
				if p.has(b) {
					covered = true
					break
				}
			}
			if !covered {
				extra = append(extra, b)
			}
		}
		if len(extra) > 0 {
			last.parts = append(last.parts, setPart{blocks: extra, fetch: readOld})
		}
	}
	for i, k := range points {
		next := target
		if i+1 < len(points) {
			next = points[i+1]
		}
		blocks, err := v.changedIn(k, next)
		if err != nil {
			return vf, err
		}
		at := k
		specs = append(specs, &setSpec{at: k, parts: []setPart{{blocks: blocks, fetch: func(b uint64, p []byte) error {
			kind, loc, err := v.source(b, at, from)
			if err != nil {
				return err
			}
			switch kind {
			case srcZero:
				clear(p)
				return nil
			case srcLog:
				return v.s.log.ReadData(journal.Loc(loc), p)
			}
			return v.readBase(p, b)
		}}}})
	}

	// Write the sets that changed; they are durable before the intent
	// names them.
	d := s.volDir(v.id)
	var refs []snapRef
	var sets []*snapSet
	for _, sp := range specs {
		if ss := sp.reuses(); ss != nil {
			refs = append(refs, snapRef{At: ss.at, File: path.Base(ss.file)})
			sets = append(sets, ss)
			continue
		}
		name := fmt.Sprintf("snap-%016x-%016x.set", uint64(sp.at), uint64(target))
		parts := sp.parts
		ss, err := writeSnapSet(s.opts.FS, path.Join(d, name), bs, sp.at, sp.blocks(), func(b uint64, p []byte) error {
			for _, part := range parts {
				if part.has(b) {
					return part.read(b, p)
				}
			}
			return errors.New("store: block in no part")
		})
		if err != nil {
			closeNew(sets, old)
			return vf, fmt.Errorf("write retained set at %d: %w", sp.at, err)
		}
		refs = append(refs, snapRef{At: sp.at, File: name})
		sets = append(sets, ss)
	}
	if err := s.opts.FS.SyncDir(d); err != nil {
		closeNew(sets, old)
		return vf, err
	}
	s.mu.Lock()
	v.st.Intent = &foldState{Target: target, Snaps: refs}
	s.st.LastTS = max(s.st.LastTS, s.log.LastTS())
	err := saveState(s.opts.FS, s.dir, s.st)
	s.mu.Unlock()
	if err != nil {
		v.st.Intent = nil
		closeNew(sets, old)
		return vf, err
	}
	applied, err := s.applyToBase(ctx, v, from, target)
	if err != nil {
		return vf, err // the intent finishes the fold at the next Open
	}
	vf.Applied = applied
	if err := s.commitFold(v, sets, old); err != nil {
		return vf, err
	}
	for _, ss := range sets {
		vf.Retained = append(vf.Retained, len(ss.blocks))
	}
	return vf, nil
}

func closeNew(sets, old []*snapSet) {
	for _, ss := range sets {
		reused := false
		for _, o := range old {
			reused = reused || o == ss
		}
		if !reused {
			ss.f.Close()
		}
	}
}

// changedIn lists, sorted, the blocks with a journal record in (from, to].
func (v *Volume) changedIn(from, to int64) ([]uint64, error) {
	set := map[uint64]struct{}{}
	err := v.idx.Changed(from, to, func(e index.Entry) bool {
		set[e.Block] = struct{}{}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", v.name, err)
	}
	return sortedKeys(set), nil
}

// applyToBase writes the volume's records in (from, to] into its base, in
// journal order, and syncs it. Applying again is harmless.
func (s *Store) applyToBase(ctx context.Context, v *Volume, from, to int64) (int, error) {
	applied := 0
	var zeros []byte
	bs := int64(v.bs)
	for _, seg := range s.log.Segments() {
		if seg.LastSeq == 0 || seg.LastTS <= from {
			continue
		}
		err := s.log.ScanSegment(ctx, seg.Num, func(rec *journal.Record, _ journal.Loc) error {
			if rec.Type == journal.TypeMarker || rec.Volume != v.id || rec.TS <= from || rec.TS > to {
				return nil
			}
			switch rec.Type {
			case journal.TypeWrite:
				if _, err := v.base.WriteAt(rec.Data, rec.Offset); err != nil {
					return err
				}
			default:
				if zeros == nil {
					zeros = make([]byte, 1<<20)
				}
				for off, n := rec.Offset, int64(rec.Length); n > 0; {
					k := min(n, int64(len(zeros)))
					if _, err := v.base.WriteAt(zeros[:k], off); err != nil {
						return err
					}
					off, n = off+k, n-k
				}
			}
			if v.present != nil {
				for b := rec.Offset / bs; b < (rec.Offset+int64(rec.Length))/bs; b++ {
					v.present.set(uint64(b))
				}
			}
			applied++
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("apply segment %d to base: %w", seg.Num, err)
		}
	}
	if err := v.base.Sync(); err != nil {
		return applied, fmt.Errorf("sync base: %w", err)
	}
	if v.present != nil {
		if err := vfs.WriteFileAtomic(s.opts.FS, path.Join(s.volDir(v.id), "present"), v.present.encode(), 0o640); err != nil {
			return applied, fmt.Errorf("write present map: %w", err)
		}
	}
	return applied, nil
}

// commitFold switches readers to the new fold point and sets, records it,
// and removes what is no longer referenced.
func (s *Store) commitFold(v *Volume, sets, old []*snapSet) error {
	s.mu.Lock()
	intent := v.st.Intent
	v.mu.Lock()
	v.snaps = sets
	v.st.FoldThrough = intent.Target
	v.st.Snaps = intent.Snaps
	v.st.Intent = nil
	v.mu.Unlock()
	err := saveState(s.opts.FS, s.dir, s.st)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	d := s.volDir(v.id)
	for _, o := range old {
		still := false
		for _, n := range sets {
			still = still || n == o
		}
		if !still {
			o.f.Close()
			s.opts.FS.Remove(o.file)
		}
	}
	s.opts.FS.SyncDir(d)
	return v.idx.DropThrough(intent.Target)
}

// finishFold completes a fold that a crash interrupted after its intent was
// recorded.
func (s *Store) finishFold(ctx context.Context, v *Volume) error {
	intent := v.st.Intent
	d := s.volDir(v.id)
	var sets []*snapSet
	for _, ref := range intent.Snaps {
		var ss *snapSet
		for _, o := range v.snaps {
			if path.Base(o.file) == ref.File {
				ss = o
			}
		}
		if ss == nil {
			var err error
			if ss, err = openSnapSet(s.opts.FS, path.Join(d, ref.File), v.bs); err != nil {
				return err
			}
		}
		sets = append(sets, ss)
	}
	if _, err := s.applyToBase(ctx, v, v.st.FoldThrough, intent.Target); err != nil {
		return err
	}
	return s.commitFold(v, sets, v.snaps)
}

// expireMarkers forgets markers no volume can read any more and records the
// retained ones that live before a fold point (their segments may go).
func (s *Store) expireMarkers(rep *FoldReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var kept []Marker
	for id, m := range s.markers {
		alive, folded := false, false
		for _, vid := range m.VolumeIDs {
			v := s.vols[vid]
			if v == nil {
				continue
			}
			v.mu.RLock()
			if m.TS >= v.st.FoldThrough || v.snapIndex(m.TS) >= 0 {
				alive = true
			}
			if m.TS <= v.st.FoldThrough {
				folded = true
			}
			v.mu.RUnlock()
		}
		if !alive {
			delete(s.markers, id)
			rep.MarkersExpired++
			continue
		}
		if folded {
			kept = append(kept, *m)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].TS < kept[j].TS })
	s.st.Markers = kept
	s.st.LastTS = max(s.st.LastTS, s.log.LastTS())
	return saveState(s.opts.FS, s.dir, s.st)
}

// removeFoldedSegments deletes the oldest segments whose every record is
// folded into its volume's base (or belongs to a deleted volume).
func (s *Store) removeFoldedSegments(rep *FoldReport) error {
	segs := s.log.Segments()
	var upTo uint64
	var bytes int64
	n := 0
	s.mu.Lock()
	s.segMu.Lock()
	for _, seg := range segs {
		if seg.Active {
			break
		}
		done := true
		for vid, ts := range s.segVols[seg.Num] {
			if v := s.vols[vid]; v != nil && ts > v.st.FoldThrough {
				done = false
				break
			}
		}
		if !done {
			break
		}
		upTo = seg.Num + 1
		bytes += seg.Size
		n++
	}
	s.segMu.Unlock()
	s.mu.Unlock()
	if n == 0 {
		return nil
	}
	if err := s.log.RemoveSegments(upTo); err != nil {
		return err
	}
	s.segMu.Lock()
	for num := range s.segVols {
		if num < upTo {
			delete(s.segVols, num)
		}
	}
	s.segMu.Unlock()
	rep.SegmentsRemoved, rep.BytesRemoved = n, bytes
	return nil
}
