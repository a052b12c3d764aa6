// Package exec is the built-in plugin for anything without a plugin of its
// own (like Velero's hooks): it runs a configured command, without a shell,
// for each call. The freeze command's stdout, when it is a JSON object, is
// the evidence. Run, the runner underneath, is also what the other built-ins
// use to run pg_ctl and configured stop/start commands.
//
// Each command gets LOCKSTEP_SERVICE, LOCKSTEP_APP and LOCKSTEP_VOLUMES
// (comma-separated) in its environment, and the freeze command also
// LOCKSTEP_HOLD (seconds it may hold the application frozen). Commands must
// be idempotent where the contract says so: thaw and stop may run when there
// is nothing to thaw or stop.
package exec

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Name is the plugin's name in policies.
const Name = "exec"

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultTimeout is the deadline of each command unless the app sets one.
const DefaultTimeout = 30 * time.Second

// maxEvidenceStdout bounds the stdout kept in evidence that is not JSON.
const maxEvidenceStdout = 4 << 10

// Plugin runs commands. It holds no state: what a command froze is the
// command's business.
type Plugin struct{}

var _ sdk.Plugin = Plugin{}

// New returns the exec plugin.
func New() sdk.Plugin { return Plugin{} }

// Info implements sdk.Plugin.
func (Plugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: Name, Version: Version, Protocol: sdk.ProtocolVersion, Handles: []string{"any application, through commands"}}, nil
}

// Schema is the exec plugin's app schema.
var Schema = sdk.Schema{
	Doc: "Runs commands (argv lists, no shell) to freeze, thaw, check, stop and start an application; the freeze command's stdout, if a JSON object, is the evidence.",
	Attributes: []sdk.Attribute{
		{Name: "freeze", Type: sdk.StringList, Required: true, NonEmpty: true, Doc: "Command that quiesces the app; a JSON object on its stdout becomes the evidence."},
		{Name: "thaw", Type: sdk.StringList, Required: true, NonEmpty: true, Doc: "Command that resumes the app; it must succeed when the app is not frozen."},
		{Name: "health", Type: sdk.StringList, Doc: "Command that exits 0 when the app is healthy."},
		{Name: "stop", Type: sdk.StringList, Doc: "Command that stops the app, for restore; it must succeed when the app is stopped."},
		{Name: "start", Type: sdk.StringList, Doc: "Command that starts the app, for restore."},
		{Name: "timeout", Type: sdk.Duration, Default: DefaultTimeout, Doc: "Deadline of each command; at the deadline its process group is killed."},
		{Name: "on_error", Type: sdk.String, Default: "fail", OneOf: []string{"fail", "continue"}, Doc: "`fail` makes a failed command fail the call; `continue` records the failure and goes on."},
		{Name: "host", Type: sdk.String, Doc: "Where the app runs; empty means the daemon's machine."},
	},
}

// ConfigSchema implements sdk.Plugin.
func (Plugin) ConfigSchema(context.Context) (sdk.Schema, error) { return Schema, nil }

// Validate implements sdk.Plugin: every configured command must be found.
func (Plugin) Validate(_ context.Context, app sdk.App) (sdk.Diagnostics, error) {
	var diags sdk.Diagnostics
	for _, attr := range []string{"freeze", "thaw", "health", "stop", "start"} {
		argv := app.Config.Strings(attr)
		if len(argv) == 0 {
			if attr == "freeze" || attr == "thaw" {
				diags = append(diags, sdk.Diagnostic{Attribute: attr, Summary: "missing command", Detail: fmt.Sprintf("%s needs a command: a list of the program and its arguments.", attr)})
			}
			continue
		}
		if err := findProgram(argv[0]); err != nil {
			diags = append(diags, sdk.Diagnostic{Attribute: attr, Summary: "program not found", Detail: err.Error()})
		}
	}
	if t := app.Config.Duration("timeout"); t < 0 {
		diags = append(diags, sdk.Diagnostic{Attribute: "timeout", Summary: "negative timeout", Detail: fmt.Sprintf("timeout is %s; it must be positive.", t)})
	}
	switch e := app.Config.String("on_error"); e {
	case "", "fail", "continue":
	default:
		diags = append(diags, sdk.Diagnostic{Attribute: "on_error", Summary: "unknown on_error", Detail: fmt.Sprintf("on_error is %q; expected \"fail\" or \"continue\".", e)})
	}
	return diags, nil
}

func findProgram(p string) error {
	if strings.Contains(p, "/") {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%q is not an executable file", p)
		}
		return nil
	}
	if _, err := osexec.LookPath(p); err != nil {
		return fmt.Errorf("%q is not in PATH (%s): give an absolute path", p, os.Getenv("PATH"))
	}
	return nil
}

// Prepare implements sdk.Plugin; exec has no prepare command.
func (Plugin) Prepare(context.Context, sdk.App) error { return nil }

// Freeze implements sdk.Plugin. When the freeze command fails and on_error
// is fail, the thaw command runs, since a failed script may have frozen
// part of the application.
func (p Plugin) Freeze(ctx context.Context, app sdk.App, hold time.Duration) (sdk.Evidence, error) {
	env := []string{"LOCKSTEP_HOLD=" + strconv.FormatFloat(hold.Seconds(), 'f', -1, 64)}
	res, err := run(ctx, app, "freeze", env)
	if err != nil {
		if !continueOnError(app) {
			if terr := p.Thaw(context.WithoutCancel(ctx), app); terr != nil {
				err = fmt.Errorf("%w; thaw after the failed freeze: %v", err, terr)
			}
			return nil, err
		}
		return sdk.Evidence{
			"exit_status": res.ExitStatus,
			"error":       err.Error(),
			"on_error":    "continue",
		}, nil
	}
	return evidence(res), nil
}

// evidence is the freeze command's stdout if that is one JSON object, else
// its exit status and the start of its stdout.
func evidence(res Result) sdk.Evidence {
	var ev map[string]any
	if json.Unmarshal(res.Stdout, &ev) == nil && ev != nil {
		return ev
	}
	e := sdk.Evidence{"exit_status": res.ExitStatus}
	if out := strings.TrimSpace(string(res.Stdout)); out != "" {
		if len(out) > maxEvidenceStdout {
			out = strings.ToValidUTF8(out[:maxEvidenceStdout], "") + "…"
		}
		e["stdout"] = out
	}
	return e
}

// Thaw implements sdk.Plugin.
func (Plugin) Thaw(ctx context.Context, app sdk.App) error {
	_, err := run(ctx, app, "thaw", nil)
	if err != nil && continueOnError(app) {
		return nil
	}
	return err
}

// Health implements sdk.Plugin. A failing health command is an unhealthy
// app, not an error; without a health command it is sdk.ErrUnsupported.
func (Plugin) Health(ctx context.Context, app sdk.App) (sdk.Health, error) {
	if len(app.Config.Strings("health")) == 0 {
		return sdk.Health{}, fmt.Errorf("exec: app %q has no health command: %w", app.Name, sdk.ErrUnsupported)
	}
	res, err := run(ctx, app, "health", nil)
	if err != nil {
		return sdk.Health{OK: false, Detail: err.Error()}, nil
	}
	return sdk.Health{OK: true, Detail: Truncate(strings.TrimSpace(string(res.Stdout)), 512)}, nil
}

// Stop implements sdk.Plugin; without a stop command it is
// sdk.ErrUnsupported.
func (Plugin) Stop(ctx context.Context, app sdk.App) error { return optional(ctx, app, "stop") }

// Start implements sdk.Plugin; without a start command it is
// sdk.ErrUnsupported.
func (Plugin) Start(ctx context.Context, app sdk.App) error { return optional(ctx, app, "start") }

func optional(ctx context.Context, app sdk.App, attr string) error {
	if len(app.Config.Strings(attr)) == 0 {
		return fmt.Errorf("exec: app %q has no %s command: %w", app.Name, attr, sdk.ErrUnsupported)
	}
	_, err := run(ctx, app, attr, nil)
	if err != nil && continueOnError(app) {
		return nil
	}
	return err
}

func continueOnError(app sdk.App) bool { return app.Config.String("on_error") == "continue" }

// run runs the command of attribute attr of app.
func run(ctx context.Context, app sdk.App, attr string, env []string) (Result, error) {
	argv := app.Config.Strings(attr)
	if len(argv) == 0 {
		return Result{ExitStatus: -1}, fmt.Errorf("exec: app %q has no %s command", app.Name, attr)
	}
	timeout := app.Config.Duration("timeout")
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	env = append([]string{
		"LOCKSTEP_SERVICE=" + app.Service,
		"LOCKSTEP_APP=" + app.Name,
		"LOCKSTEP_VOLUMES=" + strings.Join(app.Volumes, ","),
	}, env...)
	res, err := Run(ctx, Cmd{Argv: argv, Env: env, Timeout: timeout})
	if err != nil {
		return res, fmt.Errorf("app %q %s: %w", app.Name, attr, err)
	}
	return res, nil
}
