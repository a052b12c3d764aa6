// Package api is the Lockstep daemon's HTTP API as both ends see it: the wire
// types, the token file, and the one client every CLI command uses.
//
// The API is JSON over HTTP under /v1. Every request carries the daemon's
// token as "Authorization: Bearer TOKEN"; a missing or wrong token is 401.
// Errors are {"error": "..."} with a 4xx or 5xx status.
package api

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lockstep-io/lockstep/engine/store"
	"github.com/lockstep-io/lockstep/orchestrator/catalog"
)

// DefaultAddr is where `lockstep serve` listens and the CLI looks by default.
const DefaultAddr = "127.0.0.1:7460"

// Files of the data directory that belong to the API.
const (
	TokenFile = "api.token" // the bearer token, mode 0600
	AddrFile  = "api.addr"  // the address the daemon listens on, while it runs
)

// Error is the body of every non-2xx reply.
type Error struct {
	Error string `json:"error"`
}

// Status is the daemon as a whole (GET /v1/status).
type Status struct {
	Version   string    `json:"version"`
	DataDir   string    `json:"data_dir"`
	Listen    string    `json:"listen"`
	Portal    string    `json:"iscsi_portal"`
	Started   time.Time `json:"started"`
	Services  int       `json:"services"`
	Volumes   int       `json:"volumes"`
	Exposures int       `json:"exposures"`
	// OpenAlerts counts services whose RPO is breached now.
	OpenAlerts int           `json:"open_alerts"`
	Journal    JournalStatus `json:"journal"`
	Policy     *PolicyInfo   `json:"policy,omitempty"` // nil before the first apply
	// Orchestrator says which control plane runs the markers: "protect"
	// (scheduled, quiescing plugins) or "basic" (manual crash-consistent
	// markers only).
	Orchestrator string `json:"orchestrator"`
}

// JournalStatus is the shared journal of the data directory.
type JournalStatus struct {
	Segments int    `json:"segments"`
	Bytes    int64  `json:"bytes"`
	LastSeq  uint64 `json:"last_seq"`
	// Oldest is the oldest fold point over all volumes: the start of the
	// shortest-reaching journal window.
	Oldest time.Time `json:"oldest,omitzero"`
	Newest time.Time `json:"newest,omitzero"`
}

// PolicyInfo identifies the applied policy.
type PolicyInfo struct {
	Version int       `json:"version"`
	Hash    string    `json:"hash"`
	Time    time.Time `json:"time"`
	Files   []string  `json:"files"`
}

// Service is one protected service (GET /v1/services).
type Service struct {
	Name    string   `json:"name"`
	Volumes []string `json:"volumes"` // store names: service/volume
	Apps    []App    `json:"apps"`
	// Schedule is the policy's cron expression or "every DURATION".
	Schedule  string        `json:"schedule"`
	RPOTarget time.Duration `json:"rpo_target"`
	// LastApp is the newest application-consistent marker; nil when none.
	LastApp *Marker `json:"last_app,omitempty"`
	// LastMarker is the newest restorable marker of any class.
	LastMarker *Marker `json:"last_marker,omitempty"`
	// RPOAge is the age of LastApp (or, with no app marker, since the
	// policy was applied); Breached when it exceeds RPOTarget.
	RPOAge   time.Duration `json:"rpo_age"`
	Breached bool          `json:"breached"`
	NextRun  time.Time     `json:"next_run,omitzero"`
	// Running is the start of the marker running now; zero when none.
	Running time.Time `json:"running,omitzero"`
	// Alert is the open RPO alert, if any.
	Alert *catalog.Alert `json:"alert,omitempty"`
}

// App is one application of a service.
type App struct {
	Name      string   `json:"name"`
	Plugin    string   `json:"plugin"`
	Host      string   `json:"host,omitempty"`
	DependsOn []string `json:"depends_on,omitempty"`
}

// Marker is a marker as the API shows it: the catalog record plus its
// freeze window spelled out.
type Marker struct {
	catalog.Marker
	FreezeWindow time.Duration `json:"freeze_window"`
}

// NewMarker wraps a catalog marker.
func NewMarker(m catalog.Marker) Marker {
	return Marker{Marker: m, FreezeWindow: m.FreezeWindow()}
}

// Event is one thing that happened (GET /v1/events).
type Event = catalog.Event

// VolumeStatus is one volume of the data directory (GET /v1/volumes).
type VolumeStatus struct {
	store.VolumeInfo
	IQN string `json:"iqn,omitempty"`
}

// Exposure is a volume presented at a past point as a LUN of its own target.
type Exposure struct {
	IQN      string    `json:"iqn"`
	LUN      uint64    `json:"lun"`
	Portal   string    `json:"portal"`
	Volume   string    `json:"volume"`
	At       time.Time `json:"at"`
	Marker   string    `json:"marker,omitempty"`
	Writable bool      `json:"writable"`
	Clone    string    `json:"clone,omitempty"` // writable: the clone volume
}

// ExposeRequest asks for a volume at a point in time (POST /v1/expose).
type ExposeRequest struct {
	Volume   string `json:"volume"`
	At       string `json:"at,omitempty"`     // RFC 3339, -DURATION or Unix ns
	Marker   string `json:"marker,omitempty"` // a marker id instead of At
	Writable bool   `json:"writable,omitempty"`
}

// UnexposeRequest removes an exposure (POST /v1/unexpose).
type UnexposeRequest struct {
	IQN  string `json:"iqn"`
	Keep bool   `json:"keep,omitempty"`
}

// Source is one policy file sent for plan or apply. The daemon parses it
// itself, so env() and file() secrets resolve in the daemon's environment
// and never cross the wire.
type Source struct {
	Filename string `json:"filename"`
	Text     string `json:"text"`
}

// PlanRequest asks what applying Sources would change (POST /v1/plan), or
// applies them (POST /v1/apply).
type PlanRequest struct {
	Sources      []Source `json:"sources"`
	AllowDestroy bool     `json:"allow_destroy,omitempty"`
}

// Plan is what applying a policy would change.
type Plan struct {
	// Diagnostics are the policy's problems rendered with file:line and
	// source snippets; Invalid when any is an error (then nothing else is
	// set).
	Diagnostics string `json:"diagnostics,omitempty"`
	Invalid     bool   `json:"invalid,omitempty"`

	Volumes  []VolumeChange  `json:"volumes"`
	Services []ServiceChange `json:"services"`
	// Warnings are findings that do not stop an apply (an RPO that would
	// be breached at once, markers that expire).
	Warnings []string `json:"warnings"`
	// Refusals stop an apply: a shrink, a destroy without --allow-destroy,
	// an RPO the schedule cannot meet.
	Refusals []string `json:"refusals"`
	// Hash of the policy files; equal to the applied one when nothing
	// changes.
	Hash string `json:"hash"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool {
	return len(p.Volumes) == 0 && len(p.Services) == 0
}

// Actions of a change.
const (
	Create  = "create"
	Update  = "update"
	Resize  = "resize"
	Destroy = "destroy"
)

// VolumeChange is one volume to create, resize, update or destroy.
type VolumeChange struct {
	Action  string `json:"action"`
	Service string `json:"service"`
	Volume  string `json:"volume"` // store name service/volume
	OldSize int64  `json:"old_size,omitempty"`
	NewSize int64  `json:"new_size,omitempty"`
	// Detail says what changes in an update (target name, CHAP, initiators).
	Detail string `json:"detail,omitempty"`
}

// ServiceChange is a service to add, change or remove.
type ServiceChange struct {
	Action  string   `json:"action"`
	Service string   `json:"service"`
	Changes []string `json:"changes,omitempty"` // "schedule: every 1m -> every 5m"
	// Expire lists the markers the new retention would let go that the
	// old one keeps.
	Expire []MarkerRef `json:"expire,omitempty"`
}

// MarkerRef names a marker.
type MarkerRef struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Class string    `json:"class"`
}

// ApplyResult is the outcome of a successful apply.
type ApplyResult struct {
	Plan   Plan       `json:"plan"`
	Policy PolicyInfo `json:"policy"`
}

// MarshalIndent is how the CLI prints --json.
func MarshalIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

// FormatBytes renders n in binary units ("512 B", "1.5 MiB") for the
// human-readable output of the daemon's events and the CLI.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
