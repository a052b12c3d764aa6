package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/policies/parse"
)

var validateJSON bool

var validateCmd = &cobra.Command{
	Use:   "validate [DIR|FILE...]",
	Short: "Check policy files and report every problem found",
	Long: `Validate reads the policy files (*.hcl, *.lockstep.hcl) of each directory
or file given (the current directory by default), resolves env() and file()
secrets, and reports every problem of every file with its file:line:column.

Exit codes: 0 the policy is valid (warnings may be printed), 1 it is not,
2 usage error.`,
	RunE: func(cmd *cobra.Command, args []string) error {
		res, err := loadPolicy(args)
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
	rootCmd.AddCommand(validateCmd)
}

// loadPolicy reads the policy under args (default ".").
func loadPolicy(args []string) (*parse.Result, error) {
	if len(args) == 0 {
		args = []string{"."}
	}
	return parse.Load(args, parse.Options{})
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
