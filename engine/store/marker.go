package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/lockstep-io/lockstep/engine/blockdev"
	"github.com/lockstep-io/lockstep/engine/journal"
)

// Marker classes.
const (
	ClassApp   = "app"   // every application quiesced
	ClassCrash = "crash" // write-order consistent only
)

// Marker is a consistency point recorded in the journal of every volume of a
// service at one timestamp.
type Marker struct {
	ID       string   `json:"id"`
	Service  string   `json:"service"`
	Class    string   `json:"class"`
	TS       int64    `json:"ts"`
	Seq      uint64   `json:"seq"`
	Volumes  []string `json:"volumes"`
	Evidence []byte   `json:"evidence,omitempty"`
	// VolumeIDs are the journal's ids of Volumes, which survive renames and
	// deletions.
	VolumeIDs []uint32 `json:"volume_ids"`
}

// MarkSpec asks for a marker.
type MarkSpec struct {
	ID       string // generated when empty
	Service  string
	Class    string // ClassApp or ClassCrash
	Volumes  []string
	Evidence []byte
}

// Mark appends one marker record naming every volume in spec and makes it
// durable. The append is the fence: a write acknowledged before Mark was
// called is inside the cut on every volume, a write issued after Mark
// returned is outside it on every volume. Writers stall only for the append,
// not for the fsync that follows.
func (s *Store) Mark(ctx context.Context, spec MarkSpec) (*Marker, error) {
	if spec.Class != ClassApp && spec.Class != ClassCrash {
		return nil, fmt.Errorf("store: marker class %q, want %q or %q", spec.Class, ClassApp, ClassCrash)
	}
	if len(spec.Volumes) == 0 {
		return nil, fmt.Errorf("store: marker for service %q names no volume", spec.Service)
	}
	if spec.ID == "" {
		var b [8]byte
		rand.Read(b[:])
		spec.ID = "m-" + hex.EncodeToString(b[:])
	}
	rec := &journal.MarkerRec{ID: spec.ID, Service: spec.Service, Class: spec.Class, Evidence: spec.Evidence}
	s.fenceMu.RLock()
	appended := false
	defer func() {
		if !appended {
			s.fenceMu.RUnlock()
		}
	}()
	s.mu.Lock()
	if _, dup := s.markers[spec.ID]; dup {
		s.mu.Unlock()
		return nil, fmt.Errorf("store: marker id %q already used", spec.ID)
	}
	for _, name := range spec.Volumes {
		v := s.byName[name]
		if v == nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("store: marker for service %q: %w: %q", spec.Service, ErrNotFound, name)
		}
		if v.fenced.Load() {
			s.mu.Unlock()
			return nil, fmt.Errorf("store: marker for service %q: volume %q: %w (a restore is rolling it)", spec.Service, name, blockdev.ErrFenced)
		}
		rec.Volumes = append(rec.Volumes, v.id)
	}
	s.mu.Unlock()
	m := &Marker{ID: spec.ID, Service: spec.Service, Class: spec.Class, Volumes: append([]string(nil), spec.Volumes...), Evidence: spec.Evidence, VolumeIDs: rec.Volumes}
	r := &journal.Record{Type: journal.TypeMarker, Marker: rec}
	seq, _, err := s.log.Append(r, func(seq uint64, ts int64, _ journal.Loc) {
		m.Seq, m.TS = seq, ts
	})
	appended = true
	s.fenceMu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("store: marker %q: %w", spec.ID, err)
	}
	if err := s.log.Sync(ctx, seq); err != nil {
		return nil, fmt.Errorf("store: marker %q: %w", spec.ID, err)
	}
	s.mu.Lock()
	s.markers[m.ID] = m
	s.mu.Unlock()
	c := *m
	return &c, nil
}

func (s *Store) markerFromRecord(r *journal.Record) *Marker {
	mr := r.Marker
	m := &Marker{ID: mr.ID, Service: mr.Service, Class: mr.Class, TS: r.TS, Seq: r.Seq, Evidence: mr.Evidence, VolumeIDs: mr.Volumes}
	for _, id := range mr.Volumes {
		if v := s.vols[id]; v != nil {
			m.Volumes = append(m.Volumes, v.name)
		} else {
			m.Volumes = append(m.Volumes, fmt.Sprintf("#%d", id))
		}
	}
	return m
}

// Markers lists the known markers of service (all services when empty),
// oldest first.
func (s *Store) Markers(service string) []Marker {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Marker
	for _, m := range s.markers {
		if service == "" || m.Service == service {
			out = append(out, *m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TS < out[j].TS })
	return out
}

// Marker returns the marker with id.
func (s *Store) Marker(id string) (Marker, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.markers[id]
	if !ok {
		return Marker{}, false
	}
	return *m, true
}
