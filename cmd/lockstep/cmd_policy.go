package main

import (
	"encoding/json"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/policies/parse"
)

var policyCmd = &cobra.Command{
	Use:   "policy",
	Short: "Inspect policies",
}

var policyShowJSON bool

var policyShowCmd = &cobra.Command{
	Use:   "show [DIR|FILE...]",
	Short: "Print the effective policy: defaults filled in, secrets redacted",
	Long: `Show validates the policy (the current directory by default) and prints
the model lockstep runs: every default filled in, every target name and
schedule gap computed, every secret redacted. Diagnostics go to stderr.

Exit codes: 0 success, 1 the policy is invalid, 2 usage error.`,
	RunE: func(cmd *cobra.Command, args []string) error {
		res, err := loadPolicy(args)
		if err != nil {
			return withExit(exitFailure, err)
		}
		if err := writeDiagnostics(cmd.ErrOrStderr(), res); err != nil {
			return err
		}
		if res.Policy == nil {
			return withExit(exitFailure, errSilent)
		}
		out := cmd.OutOrStdout()
		if policyShowJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(res.Policy)
		}
		_, err = out.Write(parse.Render(res.Policy))
		return err
	},
}

func init() {
	policyShowCmd.Flags().BoolVar(&policyShowJSON, "json", false, "print the model as JSON")
	policyCmd.AddCommand(policyShowCmd)
	rootCmd.AddCommand(policyCmd)
}
