package restore

import (
	"context"
	"strconv"
	"time"
)

// Outcomes of a step.
const (
	OK      = "ok"
	Failed  = "failed"
	Skipped = "skipped"
)

// Event is one step of a restore, as it ended.
type Event struct {
	Restore  string        `json:"restore"` // record id; empty for plans and as-new
	Service  string        `json:"service"`
	Step     string        `json:"step"`             // stop, fence, undo-point, roll, unfence, start, health, clone
	Object   string        `json:"object,omitempty"` // the app or volume
	Outcome  string        `json:"outcome"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	Detail   string        `json:"detail,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// EventSink receives events. Event must return quickly, must be safe for
// concurrent calls (volumes roll in parallel) and cannot fail the restore:
// a sink that cannot store an event handles that itself.
type EventSink interface {
	Event(ctx context.Context, e Event)
}

// EventFunc adapts a function to EventSink.
type EventFunc func(ctx context.Context, e Event)

// Event implements EventSink.
func (f EventFunc) Event(ctx context.Context, e Event) { f(ctx, e) }

// Progress is reported as steps start and end, for a terminal; calls are
// serialised.
type Progress struct {
	Step   string
	Object string
	// Done is true when the step ended (then Outcome is set).
	Done    bool
	Outcome string
	// Step N of Total in this run.
	N, Total int
	// Bytes is what a roll is about to rewrite, or rewrote.
	Bytes int64
	// Elapsed since the run started.
	Elapsed time.Duration
}

func quote(s string) string { return strconv.Quote(s) }
