package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/pluginschemas"
	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/policies/parse"
)

var (
	validateJSON      bool
	validateDataDir   string
	validatePluginDir string
)

var validateCmd = &cobra.Command{
	Use:   "validate [DIR|FILE...]",
	Short: "Check policy files and report every problem found",
	Long: `Validate reads the policy files (*.hcl, *.lockstep.hcl) of each directory
or file given (the current directory by default), resolves env() and file()
secrets, and reports every problem of every file with its file:line:column.

With a plugin directory (--plugin-dir, or DATA/plugins from --data or
$LOCKSTEP_DATA), apps of installed plugins are checked against the schema
each plugin publishes, every plugin block's pins (version, sha256) are
checked against the installed plugin (or the binary at its source), and
each such plugin's Validate checks its apps further (built-ins are not
asked, since their checks may reach the application's servers).

Exit codes: 0 the policy is valid (warnings may be printed), 1 it is not,
2 usage error.`,
	RunE: func(cmd *cobra.Command, args []string) error {
		res, err := loadPolicyWithPlugins(args, resolvePluginDir(validateDataDir, validatePluginDir))
		if err != nil {
			return withExit(exitFailure, err)
		}
		if validateJSON {
			if err := writeDiagnosticsJSON(cmd.OutOrStdout(), res.Diagnostics); err != nil {
				return err
			}
		} else if err := writeDiagnostics(cmd.ErrOrStderr(), res); err != nil {
			return err
		}
		if res.Policy == nil {
			return withExit(exitFailure, errSilent)
		}
		if !validateJSON {
			fmt.Fprintf(cmd.OutOrStdout(), "The policy is valid: %d service(s).\n", len(res.Policy.Services))
		}
		return nil
	},
}

func init() {
	validateCmd.Flags().BoolVar(&validateJSON, "json", false, "print diagnostics as JSON on stdout")
	validateCmd.Flags().StringVar(&validateDataDir, "data", "", "data directory whose plugins/ to check against (default $LOCKSTEP_DATA)")
	validateCmd.Flags().StringVar(&validatePluginDir, "plugin-dir", "", "plugin directory to check against (default DATA/plugins)")
	rootCmd.AddCommand(validateCmd)
}

// loadPolicy reads the policy under args (default ".").
func loadPolicy(args []string) (*parse.Result, error) {
	if len(args) == 0 {
		args = []string{"."}
	}
	return parse.Load(args, parse.Options{})
}

// loadPolicyWithPlugins reads the policy under args against the plugins
// installed in pluginDir, when that directory exists, and adds an error
// for every pin the installed plugins do not satisfy.
func loadPolicyWithPlugins(args []string, pluginDir string) (*parse.Result, error) {
	if pluginDir == "" {
		return loadPolicy(args)
	}
	if st, err := os.Stat(pluginDir); err != nil || !st.IsDir() {
		return loadPolicy(args)
	}
	if len(args) == 0 {
		args = []string{"."}
	}
	m := host.NewManager(pluginDir, host.Options{})
	schemas := pluginschemas.New(m)
	res, err := parse.Load(args, parse.Options{Plugins: schemas})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	problems := schemas.Problems()
	if res.Policy != nil {
		problems = append(problems, pluginschemas.Verify(ctx, res.Policy, m)...)
	}
	if res.Policy != nil && len(problems) == 0 {
		probs, errs := pluginschemas.ValidateApps(ctx, res.Policy, m)
		problems = append(problems, errs...)
		for _, p := range probs {
			detail := p.Detail
			if detail == "" {
				detail = p.Summary + "."
			}
			res.Diagnostics = append(res.Diagnostics, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  p.Summary,
				Detail:   fmt.Sprintf("Plugin %q on app %q of service %q: %s", p.Plugin, p.App, p.Service, detail),
				Subject:  appAttrRange(res.Files, p.Service, p.App, p.Attribute),
			})
		}
	}
	for _, p := range problems {
		d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin does not match the policy", Detail: p.Error() + "."}
		var pe *pluginschemas.PinError
		if errors.As(p, &pe) {
			d.Subject = pluginBlockRange(res.Files, pe.Plugin)
		}
		res.Diagnostics = append(res.Diagnostics, d)
	}
	if res.Diagnostics.HasErrors() {
		res.Policy = nil
	}
	return res, nil
}

// pluginBlockRange finds where the plugin block called name is declared,
// so that a pin problem points at it; nil when it is not found.
func pluginBlockRange(files map[string]*hcl.File, name string) *hcl.Range {
	for _, f := range files {
		body, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			continue
		}
		for _, b := range body.Blocks {
			if b.Type == "plugin" && len(b.Labels) == 1 && b.Labels[0] == name {
				r := b.DefRange()
				return &r
			}
		}
	}
	return nil
}

// appAttrRange finds attribute attr of app appName in service svc (the
// app block itself when attr is empty or not written); nil when not found.
func appAttrRange(files map[string]*hcl.File, svc, appName, attr string) *hcl.Range {
	for _, f := range files {
		body, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			continue
		}
		for _, sb := range body.Blocks {
			if sb.Type != "service" || len(sb.Labels) != 1 || sb.Labels[0] != svc {
				continue
			}
			for _, ab := range sb.Body.Blocks {
				if ab.Type != "app" || len(ab.Labels) != 2 || ab.Labels[1] != appName {
					continue
				}
				if a := ab.Body.Attributes[attr]; a != nil {
					r := a.SrcRange
					return &r
				}
				r := ab.DefRange()
				return &r
			}
		}
	}
	return nil
}

// writeDiagnostics renders diagnostics with source snippets, in colour only
// on a terminal.
func writeDiagnostics(w io.Writer, res *parse.Result) error {
	if len(res.Diagnostics) == 0 {
		return nil
	}
	width, color := uint(0), false
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		width, color = 100, os.Getenv("NO_COLOR") == ""
	}
	return res.WriteDiagnostics(w, width, color)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// jsonDiagnostic is the machine-readable form of one diagnostic; positions
// are 1-based lines and columns and 0-based byte offsets, as in HCL.
type jsonDiagnostic struct {
	Severity string     `json:"severity"`
	Summary  string     `json:"summary"`
	Detail   string     `json:"detail,omitempty"`
	Range    *jsonRange `json:"range,omitempty"`
}

type jsonRange struct {
	Filename string  `json:"filename"`
	Start    jsonPos `json:"start"`
	End      jsonPos `json:"end"`
}

type jsonPos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

func writeDiagnosticsJSON(w io.Writer, diags hcl.Diagnostics) error {
	out := struct {
		Valid        bool             `json:"valid"`
		ErrorCount   int              `json:"error_count"`
		WarningCount int              `json:"warning_count"`
		Diagnostics  []jsonDiagnostic `json:"diagnostics"`
	}{Diagnostics: []jsonDiagnostic{}}
	for _, d := range diags {
		jd := jsonDiagnostic{Summary: d.Summary, Detail: d.Detail}
		switch d.Severity {
		case hcl.DiagError:
			jd.Severity = "error"
			out.ErrorCount++
		case hcl.DiagWarning:
			jd.Severity = "warning"
			out.WarningCount++
		default:
			jd.Severity = "unknown"
		}
		if r := d.Subject; r != nil {
			jd.Range = &jsonRange{
				Filename: r.Filename,
				Start:    jsonPos{r.Start.Line, r.Start.Column, r.Start.Byte},
				End:      jsonPos{r.End.Line, r.End.Column, r.End.Byte},
			}
		}
		out.Diagnostics = append(out.Diagnostics, jd)
	}
	out.Valid = out.ErrorCount == 0
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return errors.Join(errors.New("validate: writing JSON"), err)
	}
	return nil
}
