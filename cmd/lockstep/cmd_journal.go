package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/engine/journal"
	"github.com/lockstep-io/lockstep/engine/vfs"
)

func init() {
	jc := &cobra.Command{
		Use:   "journal",
		Short: "Check and repair a data directory's journal",
	}
	var asJSON bool
	verify := &cobra.Command{
		Use:   "verify DIR",
		Short: "Check every journal segment and list what is damaged",
		Long: `Reads every segment of the journal in DIR (a data directory, or its wal/
folder) and checks headers, record framing, CRC32C checksums, sequence
numbers and timestamps, without changing anything.

Exit codes: 0 the journal is intact, 1 damage was found, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := journal.Verify(cmd.Context(), vfs.OS{}, walDir(args[0]))
			if err != nil {
				return withExit(exitFailure, err)
			}
			printJournalReport(cmd.OutOrStdout(), rep, asJSON)
			if !rep.OK() {
				return withExit(exitFailure, errSilent)
			}
			return nil
		},
	}
	verify.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	repair := &cobra.Command{
		Use:   "repair DIR",
		Short: "Cut a torn tail off the journal, keeping a copy",
		Long: `Repairs what can be repaired without discarding a durable record: a torn
tail of the newest segment (a write that never completed) is copied to
wal/torn/ and cut off. Any other damage (a bad record below the synced
mark, a missing segment, a damaged sealed segment) is reported and nothing
is changed: restore the volume from a copy tier instead.

The daemon must not be running on DIR.

Exit codes: 0 repaired or nothing to do, 1 damage that cannot be repaired
safely, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := journal.Repair(cmd.Context(), vfs.OS{}, walDir(args[0]))
			if rep != nil {
				printJournalReport(cmd.OutOrStdout(), rep, asJSON)
			}
			if errors.Is(err, journal.ErrUnsafeRepair) {
				fmt.Fprintln(cmd.ErrOrStderr(), "lockstep: refusing to repair: fixing this damage would discard durable records; nothing was changed")
				return withExit(exitFailure, errSilent)
			}
			if err != nil {
				return withExit(exitFailure, err)
			}
			if !asJSON && rep != nil && !rep.OK() {
				fmt.Fprintln(cmd.OutOrStdout(), "repaired: torn tail cut off; a copy is under", filepath.Join(walDir(args[0]), "torn"))
			}
			return nil
		},
	}
	repair.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	jc.AddCommand(verify, repair)
	rootCmd.AddCommand(jc)
}

// walDir accepts a data directory or its wal/ folder.
func walDir(dir string) string {
	if st, err := os.Stat(filepath.Join(dir, "wal")); err == nil && st.IsDir() {
		return filepath.Join(dir, "wal")
	}
	return dir
}

func printJournalReport(w io.Writer, rep *journal.VerifyReport, asJSON bool) {
	if asJSON {
		type dmg struct {
			Segment  string `json:"segment"`
			Offset   int64  `json:"offset"`
			Problem  string `json:"problem"`
			TornTail bool   `json:"torn_tail"`
		}
		out := struct {
			Dir        string `json:"dir"`
			Segments   int    `json:"segments"`
			Records    uint64 `json:"records"`
			FirstSeq   uint64 `json:"first_seq"`
			LastSeq    uint64 `json:"last_seq"`
			OK         bool   `json:"ok"`
			Repairable bool   `json:"repairable"`
			Damage     []dmg  `json:"damage"`
		}{rep.Dir, rep.Segments, rep.Records, rep.FirstSeq, rep.LastSeq, rep.OK(), rep.Repairable(), []dmg{}}
		for _, d := range rep.Damage {
			out.Damage = append(out.Damage, dmg{d.Segment, d.Offset, d.Problem, d.TornTail})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return
	}
	fmt.Fprintf(w, "journal %s: %d segments, %d records (seq %d..%d)\n", rep.Dir, rep.Segments, rep.Records, rep.FirstSeq, rep.LastSeq)
	if rep.OK() {
		fmt.Fprintln(w, "ok: no damage")
		return
	}
	for _, d := range rep.Damage {
		fmt.Fprintln(w, "damaged:", d)
	}
	if rep.Repairable() {
		fmt.Fprintln(w, "every damage is a torn tail: `lockstep journal repair` cuts it off safely")
	} else {
		fmt.Fprintln(w, "damage below the synced mark: acknowledged data is affected; `lockstep journal repair` will refuse")
	}
}
