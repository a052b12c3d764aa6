package store

import (
	"context"
	"fmt"
)

// ChangedSince reports how many bytes a RollTo(at) would rewrite now: the
// blocks written after at, times the block size. It reads only the index
// (and the retained sets' block lists), never data.
func (v *Volume) ChangedSince(ctx context.Context, at int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !v.readable(at) {
		return 0, fmt.Errorf("volume %q at %d: %w", v.name, at, ErrOutOfWindow)
	}
	blocks, err := v.changedSince(at)
	if err != nil {
		return 0, err
	}
	return int64(len(blocks)) * int64(v.bs), nil
}
