// Package catalog is the orchestrator's record of what it applied and what
// happened: applied policies, volumes, markers with their evidence and
// timings, events, RPO alerts and the daemon's heartbeat. The journal is the
// truth about which points exist; the catalog says what they mean.
//
// Catalog is the seam: the embedded implementation is package boltcat; a
// PostgreSQL-backed one can replace it for larger installations by passing
// the conformance suite in package catalogtest.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Errors callers may test for.
var (
	ErrNotFound = errors.New("catalog: not found")
	ErrClosed   = errors.New("catalog: closed")
)

// Marker classes. App and crash markers are restorable points in the journal;
// a skipped marker is an attempt that took no point, kept for the reports.
const (
	ClassApp     = "app"
	ClassCrash   = "crash"
	ClassSkipped = "skipped"
)

// Triggers say why a marker was taken.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
	// TriggerReconcile marks a marker found in the journal but not in the
	// catalog when the daemon started (it crashed between fence and record).
	TriggerReconcile = "reconcile"
)

// Marker states.
const (
	StatePresent = "present" // the journal holds the marker record
	// StateExpired means the journal record is gone (retention folded it
	// away, or the volume was deleted); kept so reports stay complete.
	StateExpired = "expired"
)

// Marker is one service-wide consistency point (or a skipped attempt).
type Marker struct {
	ID      string    `json:"id"`
	Service string    `json:"service"`
	Time    time.Time `json:"time"` // the journal timestamp T; the attempt time when skipped
	Seq     uint64    `json:"seq"`  // journal sequence; 0 when skipped
	Class   string    `json:"class"`
	Trigger string    `json:"trigger"`
	State   string    `json:"state"`
	Volumes []string  `json:"volumes"`
	// Reason says why the marker is crash-consistent or skipped.
	Reason string `json:"reason,omitempty"`
	// FreezeStart is when the first Freeze was called and FreezeEnd when
	// the last Thaw returned; both zero when no app was frozen.
	FreezeStart time.Time     `json:"freeze_start,omitzero"`
	FreezeEnd   time.Time     `json:"freeze_end,omitzero"`
	Duration    time.Duration `json:"duration"` // the whole protocol, prepare to record
	Apps        []AppResult   `json:"apps,omitempty"`
}

// FreezeWindow is how long applications were held.
func (m *Marker) FreezeWindow() time.Duration {
	if m.FreezeStart.IsZero() || m.FreezeEnd.IsZero() {
		return 0
	}
	return m.FreezeEnd.Sub(m.FreezeStart)
}

// Restorable reports whether the marker names a point in the journal.
func (m *Marker) Restorable() bool {
	return (m.Class == ClassApp || m.Class == ClassCrash) && m.State == StatePresent
}

// AppResult is what one app's plugin did for a marker.
type AppResult struct {
	App      string          `json:"app"`
	Plugin   string          `json:"plugin"`
	Froze    bool            `json:"froze"`
	Thawed   bool            `json:"thawed"`
	Prepare  time.Duration   `json:"prepare"`
	Freeze   time.Duration   `json:"freeze"`
	Thaw     time.Duration   `json:"thaw"`
	Error    string          `json:"error,omitempty"` // first failure of this app, if any
	Evidence json.RawMessage `json:"evidence,omitempty"`
}

// MarkerFilter selects markers. Zero fields do not filter.
type MarkerFilter struct {
	Service string
	Since   time.Time // Time at or after
	Until   time.Time // Time before
	Class   string
	// Limit keeps the newest Limit markers of the selection.
	Limit int
}

// AppliedPolicy is one successful apply.
type AppliedPolicy struct {
	Version int       `json:"version"` // assigned by PutPolicy: 1, 2, ...
	Hash    string    `json:"hash"`    // sha256 of Body
	Time    time.Time `json:"time"`
	// Body is the policy's JSON form (model.Policy marshals secrets as
	// "(redacted)"; the catalog never holds a secret).
	Body json.RawMessage `json:"body"`
}

// Volume is a volume the catalog knows for a service.
type Volume struct {
	Service   string    `json:"service"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	BlockSize int       `json:"block_size"`
	Created   time.Time `json:"created"`
}

// Event types.
const (
	EventMarker         = "marker"          // a marker was recorded
	EventMarkerSkipped  = "marker_skipped"  // on_quiesce_failure = skip
	EventQuiesceFailed  = "quiesce_failed"  // a Freeze failed or timed out
	EventPrepareFailed  = "prepare_failed"  // a Prepare failed; the marker went on
	EventThawFailed     = "thaw_failed"     // a Thaw failed; the plugin's watchdog is the last guard
	EventMissedSchedule = "missed_schedule" // an activation did not run
	EventReconciled     = "reconciled"      // a journal marker added to the catalog at start
	EventMarkerExpired  = "marker_expired"  // a catalog marker whose journal record is gone
	EventRPOBreach      = "rpo_breach"
	EventRPORecovered   = "rpo_recovered"
	EventDaemonStart    = "daemon_start"
	EventDaemonDown     = "daemon_down" // a gap in the heartbeat found at start
	EventPolicyApplied  = "policy_applied"
	EventError          = "error"
)

// Severities.
const (
	Info    = "info"
	Warning = "warning"
	Error   = "error"
)

// Event is one thing that happened.
type Event struct {
	Seq      uint64          `json:"seq"` // assigned by AddEvent, increasing
	Time     time.Time       `json:"time"`
	Type     string          `json:"type"`
	Severity string          `json:"severity"`
	Service  string          `json:"service,omitempty"`
	Message  string          `json:"message"`
	Data     json.RawMessage `json:"data,omitempty"`
}

// EventFilter selects events. Zero fields do not filter.
type EventFilter struct {
	Service string
	Type    string
	Since   time.Time
	// AfterSeq returns only events with Seq > AfterSeq (for following).
	AfterSeq uint64
	// Limit keeps the newest Limit events of the selection.
	Limit int
}

// Alert causes.
const (
	CauseMissedSchedule = "missed_schedule"
	CauseFailedQuiesce  = "failed_quiesce"
	CauseDaemonDown     = "daemon_down"
)

// Alert is one RPO breach of a service on a tier.
type Alert struct {
	ID      string        `json:"id"` // assigned by OpenAlert
	Service string        `json:"service"`
	Tier    string        `json:"tier"` // "journal"
	Cause   string        `json:"cause"`
	Detail  string        `json:"detail,omitempty"`
	Target  time.Duration `json:"target"`       // the RPO
	Start   time.Time     `json:"start"`        // when the age first exceeded the target
	End     time.Time     `json:"end,omitzero"` // zero while open
}

// Open reports whether the breach is still going on.
func (a *Alert) Open() bool { return a.End.IsZero() }

// AlertFilter selects alerts. Zero fields do not filter.
type AlertFilter struct {
	Service  string
	OpenOnly bool
	// Since keeps alerts that were open at or after Since.
	Since time.Time
}

// Downtime is an interval during which the daemon was not running, derived
// from the heartbeat at start.
type Downtime struct {
	Start time.Time `json:"start"` // the last heartbeat
	End   time.Time `json:"end"`   // the next start
}

// Catalog stores the orchestrator's records. Implementations must be safe
// for concurrent use. Every write is durable when it returns without error
// (it survives a crash of the process and of the machine); a write that
// returns an error changed nothing. Reads return copies the caller may keep.
// After Close every method returns ErrClosed.
type Catalog interface {
	// PutPolicy records an applied policy together with the volumes it
	// declares, in one transaction: the policy gets the next Version (the
	// first is 1) and vols replace the volumes of every service. A volume
	// already known keeps its Created time. It returns the policy as
	// stored.
	PutPolicy(ctx context.Context, p AppliedPolicy, vols []Volume) (AppliedPolicy, error)
	// Policy returns the newest applied policy, or ErrNotFound.
	Policy(ctx context.Context) (AppliedPolicy, error)
	// Policies lists every applied policy, oldest first.
	Policies(ctx context.Context) ([]AppliedPolicy, error)
	// Volumes lists the volumes of service (all services when empty),
	// sorted by service and name.
	Volumes(ctx context.Context, service string) ([]Volume, error)

	// PutMarker inserts or replaces the marker with m.ID. It is
	// idempotent.
	PutMarker(ctx context.Context, m Marker) error
	// Marker returns the marker with id, or ErrNotFound.
	Marker(ctx context.Context, id string) (Marker, error)
	// Markers lists the selected markers, oldest first (by Time, then
	// Seq).
	Markers(ctx context.Context, f MarkerFilter) ([]Marker, error)
	// LatestMarker returns the newest marker of service whose class is
	// one of classes and that is restorable when classes holds no
	// ClassSkipped, or ErrNotFound.
	LatestMarker(ctx context.Context, service string, classes ...string) (Marker, error)

	// AddEvent appends e, assigning Seq (greater than any before it) and
	// Time when zero, and returns it. The catalog keeps a bounded
	// history: see the implementation's retention bound.
	AddEvent(ctx context.Context, e Event) (Event, error)
	// Events lists the selected events, oldest first.
	Events(ctx context.Context, f EventFilter) ([]Event, error)

	// OpenAlert records a new open alert, assigning its ID. At most one
	// alert per service and tier is open: opening a second returns the
	// one already open, unchanged.
	OpenAlert(ctx context.Context, a Alert) (Alert, error)
	// CloseAlert sets the end time of the open alert id. Closing a closed
	// alert is a no-op; an unknown id is ErrNotFound.
	CloseAlert(ctx context.Context, id string, end time.Time) (Alert, error)
	// Alerts lists the selected alerts, oldest first (by Start).
	Alerts(ctx context.Context, f AlertFilter) ([]Alert, error)

	// Heartbeat records that the daemon was alive at t.
	Heartbeat(ctx context.Context, t time.Time) error
	// LastHeartbeat returns the newest heartbeat, or the zero time.
	LastHeartbeat(ctx context.Context) (time.Time, error)
	// AddDowntime records an interval the daemon was down.
	AddDowntime(ctx context.Context, d Downtime) error
	// Downtimes lists the downtimes that end at or after since, oldest
	// first.
	Downtimes(ctx context.Context, since time.Time) ([]Downtime, error)

	// Close releases the catalog. It is safe to call twice.
	Close() error
}
