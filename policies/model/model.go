// Package model is the typed, fully resolved policy that the orchestrator and
// the engine consume. It is plain Go: no HCL types, so the data plane may
// import it without pulling in the policy language.
package model

import "time"

// Policy is every service and plugin declared in a policy directory, with
// defaults filled in and secrets resolved.
type Policy struct {
	Services []*Service // sorted by name
	Plugins  []*Plugin  // declared plugin blocks, sorted by name
}

// Service returns the service called name, or nil.
func (p *Policy) Service(name string) *Service {
	for _, s := range p.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Plugin is a top-level plugin declaration.
type Plugin struct {
	Name    string
	Source  string // "builtin" or the path of the plugin binary
	SHA256  string // lower-case hex; empty when not pinned
	Version string
}

// Builtin reports whether the plugin is compiled into lockstep.
func (p *Plugin) Builtin() bool { return p.Source == SourceBuiltin }

// SourceBuiltin is the source of a plugin compiled into lockstep.
const SourceBuiltin = "builtin"

// Service is the atomic unit of protection: its volumes share one marker
// timestamp and its apps are quiesced together.
type Service struct {
	Name        string
	Volumes     []*Volume // declaration order
	Apps        []*App    // dependency order: every app after the apps it depends on
	Consistency Consistency
	RPO         RPO
	Retention   Retention
}

// Volume returns the volume called name, or nil.
func (s *Service) Volume(name string) *Volume {
	for _, v := range s.Volumes {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// App returns the app called name, or nil.
func (s *Service) App(name string) *App {
	for _, a := range s.Apps {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Volume is a block device of a service, served over iSCSI.
type Volume struct {
	Name       string
	Size       int64 // bytes, a multiple of BlockSize
	BlockSize  int   // 512 or 4096
	TargetName string
	Initiators []string // IQNs allowed to log in; empty means any
	CHAP       *CHAP    // nil when CHAP is off
}

// CHAP is the iSCSI CHAP authentication of a volume's target.
type CHAP struct {
	Username       string
	Secret         Secret
	MutualUsername string // empty when mutual CHAP is off
	MutualSecret   Secret
}

// App is one application of a service, quiesced by a plugin.
type App struct {
	Plugin    string
	Name      string
	Volumes   []string // names of volumes of the same service
	DependsOn []string // names of apps of the same service
	// Config holds the plugin-owned attributes, defaults filled in. Values
	// are string, []string, time.Duration, int64, bool or Secret.
	Config map[string]any
}

// Host returns where the app runs; empty means the daemon's machine.
func (a *App) Host() string {
	h, _ := a.Config["host"].(string)
	return h
}

// QuiesceFailure says what a marker becomes when an app fails to quiesce.
type QuiesceFailure string

// The values of on_quiesce_failure.
const (
	// CrashConsistent takes the marker anyway and records it as crash-consistent.
	CrashConsistent QuiesceFailure = "crash_consistent"
	// Skip takes no marker.
	Skip QuiesceFailure = "skip"
)

// Consistency is when markers are taken and how long apps may stay frozen.
// Exactly one of Schedule and Every is set.
type Consistency struct {
	Schedule         string        // robfig/cron expression
	Every            time.Duration // fixed interval
	QuiesceTimeout   time.Duration
	OnQuiesceFailure QuiesceFailure
	// MaxGap is the longest interval between two consecutive markers the
	// schedule produces, computed at validation.
	MaxGap time.Duration
}

// RPO is the longest acceptable age of the newest application-consistent
// marker, per tier.
type RPO struct {
	Journal time.Duration
}

// Retention keeps every write for Journal, then the markers chosen by the
// Keep* rules (grandfather-father-son).
type Retention struct {
	Journal     time.Duration
	KeepHourly  int
	KeepDaily   int
	KeepWeekly  int
	KeepMonthly int
	KeepYearly  int
}
