package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/lockstep-io/lockstep/engine/vfs"
)

const stateVersion = 1

// state is what state.json holds. It changes rarely (volume create/delete,
// fold) and is always replaced atomically.
type state struct {
	Version      int            `json:"version"`
	NextVolumeID uint32         `json:"next_volume_id"`
	Volumes      []*volumeState `json:"volumes"`
	// Markers whose journal segment may already be gone: every retained
	// marker at or before some volume's fold point.
	Markers []Marker `json:"markers,omitempty"`
	// LastTS keeps timestamps monotonic even when the journal is empty.
	LastTS int64 `json:"last_ts"`
}

type volumeState struct {
	ID           uint32     `json:"id"`
	Name         string     `json:"name"`
	Size         int64      `json:"size"`
	BlockSize    int        `json:"block_size"`
	WriteThrough bool       `json:"write_through,omitempty"`
	ParentID     uint32     `json:"parent_id,omitempty"`
	ParentAt     int64      `json:"parent_at,omitempty"`
	Created      int64      `json:"created"`
	FoldThrough  int64      `json:"fold_through"`
	Snaps        []snapRef  `json:"snaps,omitempty"`
	Intent       *foldState `json:"fold_intent,omitempty"`
}

// foldState is a fold that was started: its sets are durable, the base may
// hold any subset of the records in (FoldThrough, Target].
type foldState struct {
	Target int64     `json:"target"`
	Snaps  []snapRef `json:"snaps"`
}

type snapRef struct {
	At   int64  `json:"at"`
	File string `json:"file"`
}

func loadState(fsys vfs.FS, dir string) (*state, error) {
	b, err := vfs.ReadFile(fsys, path.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return &state{Version: stateVersion, NextVolumeID: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store %q: read state: %w", dir, err)
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("store %q: state.json is damaged: %w", dir, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("store %q: state.json version %d, this build reads %d", dir, st.Version, stateVersion)
	}
	return st, nil
}

func saveState(fsys vfs.FS, dir string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := vfs.WriteFileAtomic(fsys, path.Join(dir, "state.json"), b, 0o640); err != nil {
		return fmt.Errorf("store %q: write state: %w", dir, err)
	}
	return nil
}
