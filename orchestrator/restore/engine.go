package restore

import (
	"context"
	"fmt"

	"github.com/lockstep-io/lockstep/engine/store"
)

// Volume is what a restore does to one journaled volume.
type Volume interface {
	Name() string
	// SetFenced makes the volume refuse host I/O while on. It is not
	// durable: a restarted process starts unfenced (see Restorer.Reopen).
	SetFenced(on bool)
	// ChangedSince is the number of bytes RollTo(at) would rewrite now.
	ChangedSince(ctx context.Context, at int64) (int64, error)
	// RollTo makes the volume read as at timestamp at by journaling new
	// writes; the history after at stays readable. Rolling again to the
	// same point is idempotent. It returns the bytes rewritten and is
	// durable when it returns.
	RollTo(ctx context.Context, at int64) (int64, error)
}

// Engine is the data plane a restore works on.
type Engine interface {
	// Volume returns the named volume; an error wrapping store.ErrNotFound
	// when there is none.
	Volume(name string) (Volume, error)
	// Clone creates a writable copy-on-write volume name holding src at at,
	// copying nothing.
	Clone(ctx context.Context, src string, at int64, name string) error
	// Delete removes a volume (used to undo a half-made set of clones).
	Delete(ctx context.Context, name string) error
	// Now makes every write so far durable and returns a timestamp at or
	// after every journaled write and before every later one.
	Now(ctx context.Context) (int64, error)
}

// StoreEngine is an Engine backed by a store.
type StoreEngine struct{ Store *store.Store }

var _ Engine = StoreEngine{}

// Volume implements Engine.
func (e StoreEngine) Volume(name string) (Volume, error) {
	v, err := e.Store.Volume(name)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Clone implements Engine.
func (e StoreEngine) Clone(ctx context.Context, src string, at int64, name string) error {
	_, err := e.Store.Clone(ctx, src, at, name)
	return err
}

// Delete implements Engine.
func (e StoreEngine) Delete(ctx context.Context, name string) error {
	return e.Store.DeleteVolume(ctx, name)
}

// Now implements Engine.
func (e StoreEngine) Now(ctx context.Context) (int64, error) {
	if err := e.Store.Sync(ctx); err != nil {
		return 0, fmt.Errorf("sync store: %w", err)
	}
	return e.Store.Journal().Tick(), nil
}
