package restore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

// Kinds of in-place restore.
const (
	KindService = "service" // every volume and app of a service
	KindVolume  = "volume"  // one volume; breaks the service's consistency
	KindUndo    = "undo"    // back to the undo point of an earlier restore
)

// States of a record.
const (
	StateRunning = "running" // in progress, or its process died: Resume
	StateFailed  = "failed"  // a step failed: Resume or Undo
	StateDone    = "done"
	StateUndone  = "undone" // done or failed, then undone
)

// Record is the durable state of one in-place restore.
type Record struct {
	ID      string  `json:"id"`
	Kind    string  `json:"kind"`
	Service string  `json:"service"`
	Target  int64   `json:"target"` // Unix ns
	Marker  *Marker `json:"marker,omitempty"`
	// Undoes is the record an undo undoes; UndoneBy the undo of this one.
	Undoes   string `json:"undoes,omitempty"`
	UndoneBy string `json:"undone_by,omitempty"`
	// UndoPoint is the journal's time just before the first roll, 0 until
	// taken; rolling back to it undoes this restore.
	UndoPoint int64    `json:"undo_point,omitempty"`
	Volumes   []string `json:"volumes"`
	Apps      []string `json:"apps"` // dependency order
	// Stopped lists the apps stopped and not started since.
	Stopped []string `json:"stopped,omitempty"`
	// Fenced is true while the volumes are (meant to be) fenced.
	Fenced bool                    `json:"fenced,omitempty"`
	Rolled map[string]RolledVolume `json:"rolled,omitempty"`
	// Healthy lists the apps whose health check passed after the start.
	Healthy  []string     `json:"healthy,omitempty"`
	Steps    []StepRecord `json:"steps,omitempty"`
	State    string       `json:"state"`
	Error    string       `json:"error,omitempty"`
	Warnings []string     `json:"warnings,omitempty"`
	Created  time.Time    `json:"created"`
	Updated  time.Time    `json:"updated"`
	// Duration is the time spent running, over every attempt.
	Duration time.Duration `json:"duration"`
}

// RolledVolume is a volume whose roll finished.
type RolledVolume struct {
	Bytes int64 `json:"bytes"`
	// At is the journal's time after the roll: a write after it means
	// someone wrote to the volume since, and a resume rolls it again.
	At int64 `json:"at"`
}

// StepRecord is one step as it ended.
type StepRecord struct {
	Step     string        `json:"step"`
	Object   string        `json:"object,omitempty"`
	Outcome  string        `json:"outcome"`
	Duration time.Duration `json:"duration"`
	Error    string        `json:"error,omitempty"`
}

// NotRolled lists the volumes not rolled yet.
func (r *Record) NotRolled() []string {
	var out []string
	for _, v := range r.Volumes {
		if _, ok := r.Rolled[v]; !ok {
			out = append(out, v)
		}
	}
	return out
}

// Finished reports whether the record needs no more work.
func (r *Record) Finished() bool { return r.State == StateDone || r.State == StateUndone }

// Summary says where the restore stands, in one line.
func (r *Record) Summary() string {
	var rolled []string
	for _, v := range r.Volumes {
		if _, ok := r.Rolled[v]; ok {
			rolled = append(rolled, v)
		}
	}
	s := fmt.Sprintf("%s restore %s of service %q: %s; volumes rolled %s, not rolled %s; apps stopped %s",
		r.Kind, r.ID, r.Service, r.State, list(rolled), list(r.NotRolled()), list(r.Stopped))
	if r.Fenced {
		s += "; volumes fenced"
	}
	return s
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return "[" + strings.Join(s, " ") + "]"
}

func addOnce(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func remove(s []string, v string) []string {
	return slices.DeleteFunc(s, func(x string) bool { return x == v })
}

// records keeps Record files in a directory.
type records struct {
	fs  vfs.FS
	dir string
}

func newID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return "r-" + now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

func (s records) file(id string) string { return path.Join(s.dir, id+".json") }

func (s records) save(r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := vfs.WriteFileAtomic(s.fs, s.file(r.ID), b, 0o640); err != nil {
		return fmt.Errorf("restore record %s: %w", r.ID, err)
	}
	return nil
}

func (s records) load(id string) (*Record, error) {
	if strings.ContainsAny(id, "/\\") || id == "" {
		return nil, fmt.Errorf("restore: bad record id %q", id)
	}
	b, err := vfs.ReadFile(s.fs, s.file(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore: no restore record %q in %s", id, s.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("restore record %s: %w", id, err)
	}
	r := &Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("restore record %s is damaged: %w", id, err)
	}
	return r, nil
}

// list returns the records of service (all when empty), oldest first.
func (s records) list(service string) ([]*Record, error) {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("restore records %s: %w", s.dir, err)
	}
	var out []*Record
	for _, n := range names {
		id, ok := strings.CutSuffix(n, ".json")
		if !ok || !strings.HasPrefix(id, "r-") {
			continue
		}
		r, err := s.load(id)
		if err != nil {
			return nil, err
		}
		if service == "" || r.Service == service {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
