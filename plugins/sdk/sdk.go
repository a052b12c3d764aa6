// Package sdk is what a plugin vendor builds against: implement Plugin and
// call Serve from main. The host (lockstep) talks to the plugin over gRPC
// through hashicorp/go-plugin; built-in plugins use the same path.
package sdk

import (
	"context"
	"errors"
	"time"
)

// Plugin is the contract between Lockstep and an application quiescer.
//
// Every call carries a context whose deadline the host sets; an
// implementation must return by then. Calls on different apps may run
// concurrently; calls on one app are serialised by the host.
type Plugin interface {
	// Info names the plugin and the applications it handles. It must not
	// touch any application.
	Info(ctx context.Context) (Info, error)
	// ConfigSchema publishes the attributes an app block of this plugin
	// accepts. The host validates policies with it before any other call.
	ConfigSchema(ctx context.Context) (Schema, error)
	// Validate checks an app's configuration beyond its schema (a path
	// that must exist, a DSN that must parse). It must not change the
	// application. Problems are returned as Diagnostics, one per attribute.
	Validate(ctx context.Context, app App) (Diagnostics, error)
	// Prepare does work that shortens the coming freeze (a CHECKPOINT).
	// The application keeps serving. Prepare may be followed by no Freeze.
	Prepare(ctx context.Context, app App) error
	// Freeze brings the application to a state that a crash-consistent cut
	// of its volumes can restore, and keeps it there until Thaw or until
	// hold has elapsed, whichever comes first (the SDK's watchdog calls Thaw
	// when hold elapses or the host disappears). It returns the evidence of
	// that state. On error the application must be left thawed.
	Freeze(ctx context.Context, app App, hold time.Duration) (Evidence, error)
	// Thaw releases what Freeze held. It is idempotent: thawing an app that
	// is not frozen succeeds.
	Thaw(ctx context.Context, app App) error
	// Health reports whether the application is serving.
	Health(ctx context.Context, app App) (Health, error)
	// Stop stops the application and makes it let go of its volumes, for a
	// restore. Stopping a stopped application succeeds.
	Stop(ctx context.Context, app App) error
	// Start starts the application after a restore. Starting a running
	// application succeeds.
	Start(ctx context.Context, app App) error
}

// ErrUnsupported is returned by a call a plugin does not implement (a
// quiescer with no Stop, say). The host treats it as "nothing to do" where
// that is safe and as a failure where it is not.
var ErrUnsupported = errors.New("plugin: operation not supported")

// Info describes a plugin.
type Info struct {
	Name     string   // the name apps use in their block label
	Version  string   // semantic version of the plugin
	Protocol int      // ProtocolVersion the plugin was built against
	Handles  []string // applications handled, e.g. "postgresql 13-17"
}

// App is one app block of a policy, as the plugin sees it.
type App struct {
	Service string // the service the app belongs to
	Name    string // the app block's name
	// Volumes are the service's volumes the app lives on, by their Lockstep
	// names ("service/volume", as `lockstep volume list` shows them).
	Volumes []string
	Config  Config
}

// Config holds an app's plugin-owned attributes with defaults filled in.
// Values are string, []string, time.Duration, int64 or bool; attributes of
// type secret or sensitive arrive as string and must never be logged.
type Config map[string]any

// String returns the string attribute name, or "".
func (c Config) String(name string) string { s, _ := c[name].(string); return s }

// Strings returns the list attribute name, or nil.
func (c Config) Strings(name string) []string { s, _ := c[name].([]string); return s }

// Duration returns the duration attribute name, or 0.
func (c Config) Duration(name string) time.Duration { d, _ := c[name].(time.Duration); return d }

// Int returns the number attribute name, or 0.
func (c Config) Int(name string) int64 { n, _ := c[name].(int64); return n }

// Bool returns the bool attribute name, or false.
func (c Config) Bool(name string) bool { b, _ := c[name].(bool); return b }

// Evidence is what a consistent state means for the application (a WAL
// LSN, a binlog position, queue counts). It is stored with the marker and
// shown at restore; keep it small (the host refuses more than 64 KiB).
// Values must survive a JSON round trip.
type Evidence map[string]any

// Health is the answer of Health.
type Health struct {
	OK     bool
	Detail string // why not, or what was checked
}

// Schema describes the attributes of a plugin's app blocks.
type Schema struct {
	Doc        string
	Attributes []Attribute
}

// Attribute is one attribute of an app block.
type Attribute struct {
	Name     string
	Type     Type
	Required bool
	Default  any      // of the Go type of Type; nil when none
	OneOf    []string // allowed values of a string
	Absolute bool     // a string or each list element must be an absolute path
	NonEmpty bool     // a string or list must not be empty
	Doc      string
}

// Type is the type of an attribute.
type Type string

// The attribute types and the Go type each arrives as in Config.
const (
	String     Type = "string"       // string
	StringList Type = "list(string)" // []string
	Duration   Type = "duration"     // time.Duration
	Number     Type = "number"       // int64
	Bool       Type = "bool"         // bool
	// Secret must be written in the policy as env() or file().
	Secret Type = "secret" // string
	// Sensitive may be a literal or come from env()/file(); redacted.
	Sensitive Type = "sensitive string" // string
)

// Diagnostic is one problem Validate found.
type Diagnostic struct {
	Attribute string // the attribute at fault; empty for the whole app
	Summary   string
	Detail    string
}

// Diagnostics is the result of Validate; empty means valid.
type Diagnostics []Diagnostic
