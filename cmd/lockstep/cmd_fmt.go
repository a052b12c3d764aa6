package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/engine/vfs"
	"github.com/lockstep-io/lockstep/policies/parse"
)

var fmtCmd = &cobra.Command{
	Use:   "fmt [-check] [DIR|FILE...]",
	Short: "Rewrite policy files in canonical HCL formatting",
	Long: `Fmt rewrites the policy files (*.hcl) of each directory or file given (the
current directory by default) in canonical formatting and prints the names
of the files it changed. With -check it changes nothing and prints the
files that need formatting.

Exit codes: 0 success (with -check: every file is formatted), 1 a file has
syntax errors or (with -check) needs formatting, 2 usage error.`,
	// Flags are parsed here so that the single-dash -check works as well as --check.
	DisableFlagParsing: true,
	RunE:               runFmt,
}

func init() { rootCmd.AddCommand(fmtCmd) }

func runFmt(cmd *cobra.Command, args []string) error {
	fs := flag.NewFlagSet("fmt", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	check := fs.Bool("check", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cmd.Help()
		}
		return withExit(exitUsage, fmt.Errorf("fmt: %w", err))
	}
	paths := fs.Args()
	if len(paths) == 0 {
		paths = []string{"."}
	}
	files, err := parse.PolicyFiles(paths)
	if err != nil {
		return withExit(exitFailure, err)
	}
	out, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	failed := false
	for _, name := range files {
		st, err := os.Stat(name)
		if err != nil {
			return withExit(exitFailure, fmt.Errorf("fmt: %w", err))
		}
		src, err := os.ReadFile(name)
		if err != nil {
			return withExit(exitFailure, fmt.Errorf("fmt: %w", err))
		}
		formatted, diags := formatHCL(src, name)
		if diags.HasErrors() {
			hf, _ := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
			files := map[string]*hcl.File{}
			if hf != nil {
				files[name] = hf
			}
			_ = writeDiagnostics(stderr, &parse.Result{Diagnostics: diags, Files: files})
			failed = true
			continue
		}
		if bytes.Equal(src, formatted) {
			continue
		}
		fmt.Fprintln(out, name)
		if *check {
			failed = true
			continue
		}
		if err := vfs.WriteFileAtomic(vfs.OS{}, name, formatted, st.Mode().Perm()); err != nil {
			return withExit(exitFailure, fmt.Errorf("fmt: %w", err))
		}
	}
	if failed {
		return withExit(exitFailure, errSilent)
	}
	return nil
}

// formatHCL returns src in canonical formatting, refusing files with
// syntax errors (formatting those could move broken code around).
func formatHCL(src []byte, name string) ([]byte, hcl.Diagnostics) {
	if _, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos); diags.HasErrors() {
		return nil, diags
	}
	return hclwrite.Format(src), nil
}
