package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/policies/parse"
)

func init() {
	var asJSON, allowDestroy bool
	cmd := &cobra.Command{
		Use:   "plan DIR [--allow-destroy]",
		Short: "Show what applying a policy would change, without changing anything",
		Long: `Sends the policy files of DIR (or a single file) to the running daemon,
which resolves them in its own environment (env() and file() secrets never
leave the daemon's machine) and compares them with what it runs:

  + volumes to create, ~ targets to change, - volumes to destroy
  ~ volumes to resize: shrinking is refused; growing is not supported yet
  schedule, RPO, retention and app changes per service, and the markers the
  new retention would let expire
  RPO targets the schedule cannot meet, and RPOs already breached

Nothing changes. --allow-destroy plans as 'apply --allow-destroy' would.

Exit codes: 0 the plan can be applied (it may be empty), 1 the policy is
invalid, apply would refuse the plan, or the daemon could not be reached,
2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcs, err := readSources(args[0])
			if err != nil {
				return withExit(exitFailure, err)
			}
			c, err := clientOf(cmd)
			if err != nil {
				return err
			}
			p, err := c.Plan(cmd.Context(), api.PlanRequest{Sources: srcs, AllowDestroy: allowDestroy})
			if err != nil {
				return withExit(exitFailure, err)
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), p); err != nil {
					return err
				}
			} else {
				printPlan(cmd.OutOrStdout(), cmd.ErrOrStderr(), &p)
			}
			switch {
			case p.Invalid:
				return withExit(exitFailure, fmt.Errorf("policy %s is invalid; nothing would be applied", args[0]))
			case len(p.Refusals) > 0:
				return withExit(exitFailure, fmt.Errorf("apply would refuse this plan (%d reason(s) above)", len(p.Refusals)))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	cmd.Flags().BoolVar(&allowDestroy, "allow-destroy", false, "plan as if volumes may be destroyed")
	addClientFlags(cmd.Flags())
	rootCmd.AddCommand(cmd)
}

// readSources reads the policy files of path for the daemon, with absolute
// names so that diagnostics and file() paths mean the same to it.
func readSources(path string) ([]api.Source, error) {
	files, err := parse.PolicyFiles([]string{path})
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy %s: no policy files (*.hcl) found", path)
	}
	var out []api.Source
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", path, err)
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			abs = f
		}
		out = append(out, api.Source{Filename: abs, Text: string(b)})
	}
	return out, nil
}

// printPlan writes a plan the way terraform does: one line per change,
// then warnings and refusals.
func printPlan(w, ew io.Writer, p *api.Plan) {
	if p.Diagnostics != "" {
		fmt.Fprint(ew, p.Diagnostics)
	}
	if p.Invalid {
		return
	}
	sign := map[string]string{api.Create: "+", api.Update: "~", api.Resize: "~", api.Destroy: "-"}
	if p.Empty() {
		fmt.Fprintln(w, "No changes: the daemon already runs this policy.")
	}
	if len(p.Volumes) > 0 {
		fmt.Fprintln(w, "Volumes:")
	}
	var create, change, destroy int
	for _, v := range p.Volumes {
		switch v.Action {
		case api.Create:
			create++
			fmt.Fprintf(w, "  + %s  %s\n", v.Volume, v.Detail)
		case api.Resize:
			change++
			fmt.Fprintf(w, "  ~ %s  resize %s -> %s\n", v.Volume, api.FormatBytes(v.OldSize), api.FormatBytes(v.NewSize))
		case api.Update:
			change++
			fmt.Fprintf(w, "  ~ %s  %s\n", v.Volume, v.Detail)
		case api.Destroy:
			destroy++
			fmt.Fprintf(w, "  - %s  %s and its whole journal history\n", v.Volume, api.FormatBytes(v.OldSize))
		}
	}
	if len(p.Services) > 0 {
		fmt.Fprintln(w, "Services:")
	}
	for _, s := range p.Services {
		fmt.Fprintf(w, "  %s %s\n", sign[s.Action], s.Service)
		for _, c := range s.Changes {
			fmt.Fprintf(w, "      %s\n", c)
		}
		if len(s.Expire) > 0 {
			fmt.Fprintf(w, "      markers that would expire (%d):\n", len(s.Expire))
			for _, m := range s.Expire {
				fmt.Fprintf(w, "        %s  %s  %s\n", m.ID, m.Time.Format(time.RFC3339), m.Class)
			}
		}
	}
	for _, x := range p.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", x)
	}
	for _, x := range p.Refusals {
		fmt.Fprintf(w, "Refused: %s\n", x)
	}
	if !p.Empty() {
		fmt.Fprintf(w, "Plan: %d volume(s) to create, %d to change, %d to destroy; %d service change(s).\n", create, change, destroy, len(p.Services))
	}
}
