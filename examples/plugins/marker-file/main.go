// Command marker-file is a small vendor plugin to copy when writing one of
// your own: it implements sdk.Plugin and calls sdk.Serve. Its "application"
// is a state file: Freeze writes "frozen" to it, Thaw writes "thawed", and
// every call is appended to STATE_FILE.log, so tests can see what the host
// and the watchdog did.
//
// Build it with `go build ./examples/plugins/marker-file` and install it
// with `lockstep plugin install ./marker-file`.
//
// The attributes hang_in_freeze, crash_in_freeze and evidence_bytes are
// TEST-ONLY fault injection for Lockstep's own tests; a real plugin has
// nothing like them.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// version is set at link time by tests that need another one.
var version = "0.1.0"

type markerFile struct{}

var _ sdk.Plugin = markerFile{}

func main() { sdk.Serve(markerFile{}) }

func (markerFile) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:     "marker-file",
		Version:  version,
		Protocol: sdk.ProtocolVersion,
		Handles:  []string{"a state file (example plugin)"},
	}, nil
}

func (markerFile) ConfigSchema(context.Context) (sdk.Schema, error) {
	return sdk.Schema{
		Doc: "Example plugin: records freeze and thaw in a state file.",
		Attributes: []sdk.Attribute{
			{Name: "state_file", Type: sdk.String, Required: true, Absolute: true, NonEmpty: true, Doc: "File that holds `frozen` or `thawed`."},
			{Name: "hang_in_freeze", Type: sdk.Bool, Default: false, Doc: "TEST ONLY: Freeze writes `frozen` and then never returns."},
			{Name: "crash_in_freeze", Type: sdk.Bool, Default: false, Doc: "TEST ONLY: Freeze writes `frozen` and then the process exits."},
			{Name: "evidence_bytes", Type: sdk.Number, Default: int64(0), Doc: "TEST ONLY: pad the evidence to this many bytes."},
		},
	}, nil
}

func (markerFile) Validate(_ context.Context, app sdk.App) (sdk.Diagnostics, error) {
	path := app.Config.String("state_file")
	if path == "" {
		return sdk.Diagnostics{{Attribute: "state_file", Summary: "Missing state file"}}, nil
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		return sdk.Diagnostics{{Attribute: "state_file", Summary: "No such directory", Detail: fmt.Sprintf("The directory of %q does not exist.", path)}}, nil
	}
	return nil, nil
}

func (markerFile) Prepare(_ context.Context, app sdk.App) error {
	return record(app, "prepare")
}

func (markerFile) Freeze(_ context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	if err := setState(app, "frozen"); err != nil {
		return nil, err
	}
	if app.Config.Bool("crash_in_freeze") {
		os.Exit(7)
	}
	if app.Config.Bool("hang_in_freeze") {
		time.Sleep(time.Hour) // ignores the context on purpose
	}
	ev := sdk.Evidence{"frozen_at": time.Now().UTC().Format(time.RFC3339Nano), "hold": hold.String()}
	if n := app.Config.Int("evidence_bytes"); n > 0 {
		ev["padding"] = strings.Repeat("x", int(n))
	}
	return ev, nil
}

func (markerFile) Thaw(_ context.Context, app sdk.App) error {
	return setState(app, "thawed")
}

func (markerFile) Health(_ context.Context, app sdk.App) (sdk.Health, error) {
	b, err := os.ReadFile(app.Config.String("state_file"))
	if err != nil {
		return sdk.Health{OK: false, Detail: err.Error()}, nil
	}
	return sdk.Health{OK: true, Detail: "state " + strings.TrimSpace(string(b))}, nil
}

func (markerFile) Stop(_ context.Context, app sdk.App) error { return record(app, "stop") }

func (markerFile) Start(_ context.Context, app sdk.App) error { return record(app, "start") }

// setState replaces the state file atomically and logs the change.
func setState(app sdk.App, state string) error {
	path := app.Config.String("state_file")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(state+"\n"), 0o644); err != nil {
		return fmt.Errorf("marker-file: app %q: %w", app.Name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("marker-file: app %q: %w", app.Name, err)
	}
	return record(app, state)
}

func record(app sdk.App, event string) error {
	f, err := os.OpenFile(app.Config.String("state_file")+".log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("marker-file: app %q: %w", app.Name, err)
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s %d\n", time.Now().UTC().Format(time.RFC3339Nano), event, os.Getpid())
	return err
}
