package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/lockstep-io/lockstep/orchestrator/api"
	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

// restoreOpts are the flags shared by `restore` and `volume restore`.
type restoreOpts struct {
	to              string
	plan            bool
	crashConsistent bool
	yes             bool
	asJSON          *bool
}

func init() {
	var o restoreOpts
	var asJSON, undo bool
	var asNew, resume string
	o.asJSON = &asJSON
	cmd := &cobra.Command{
		Use:   "restore SERVICE --to TIME|MARKER [--plan] [--as-new SUFFIX] [--crash-consistent] [--yes] | SERVICE --undo | --resume ID",
		Short: "Restore a whole service to a point in time",
		Long: `Restores every volume and app of SERVICE to one consistent point.

--to takes a marker id or a time: RFC 3339 (2026-11-23T14:00:00Z),
"2026-11-23 14:00", "-15m", "15m ago", "14:00", "yesterday 14:00". For a
time, the newest application-consistent marker at or before it is chosen;
--crash-consistent restores to the time exactly instead (the apps recover as
after a power loss).

--plan prints what would happen and changes nothing: the marker and its
evidence, its distance from the requested time, each volume and the bytes to
roll back, the apps to stop and start in order, and a time estimate.

In place (the default) the daemon stops the apps (reverse dependency order),
fences the volumes (the iSCSI target refuses I/O), rolls every volume back,
unfences, starts the apps (dependency order) and checks their health.
Without --yes the plan is shown and confirmation asked on a terminal; when
stdin is not a terminal the restore is refused (exit 2). The restore is
journaled: --undo returns the service to just before it. A restore that
fails part-way says which volumes were rolled and which apps are stopped,
and is finished with --resume ID or undone with --undo.

--as-new SUFFIX leaves the service untouched and presents every volume at
the point as a new copy-on-write volume VOLUME+SUFFIX on a target of its own
(remove one with ` + "`lockstep volume unexpose IQN`" + `).

Progress of steps that take over a second goes to stderr; --json prints the
final record (or the plan) as JSON.

Exit codes: 0 restored (or planned), 1 the restore failed or was refused by
the daemon or declined, 2 usage error or no confirmation (not a terminal and
no --yes).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			switch {
			case resume != "":
				if o.to != "" || undo || o.plan || asNew != "" {
					return withExit(exitUsage, errors.New("--resume takes no --to, --undo, --plan or --as-new"))
				}
				return runResume(cmd, service, resume, asJSON)
			case undo:
				if service == "" {
					return withExit(exitUsage, errors.New("--undo needs the SERVICE"))
				}
				if o.to != "" || o.plan || asNew != "" {
					return withExit(exitUsage, errors.New("--undo takes no --to, --plan or --as-new"))
				}
				return runUndo(cmd, service, o)
			}
			if service == "" {
				return withExit(exitUsage, errors.New("give the SERVICE to restore"))
			}
			if o.to == "" {
				return withExit(exitUsage, errors.New("give --to TIME or --to MARKER (see `lockstep markers "+service+"`)"))
			}
			req, err := restoreRequest(o)
			if err != nil {
				return withExit(exitUsage, err)
			}
			if asNew != "" {
				if o.plan {
					return runPlan(cmd, service, req, o)
				}
				req.AsNew = asNew
				return runAsNew(cmd, service, req, asJSON)
			}
			return runInPlace(cmd, service, req, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "marker id or time to restore to")
	f.BoolVar(&o.plan, "plan", false, "print what the restore would do; change nothing")
	f.StringVar(&asNew, "as-new", "", "present the volumes at the point as new volumes VOLUME+SUFFIX; the service is untouched")
	f.BoolVar(&o.crashConsistent, "crash-consistent", false, "restore to the time exactly, not to the newest app-consistent marker before it")
	f.BoolVar(&o.yes, "yes", false, "restore in place without asking")
	f.BoolVar(&undo, "undo", false, "return SERVICE to the state just before its newest restore")
	f.StringVar(&resume, "resume", "", "finish the unfinished restore ID")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(f)
	rootCmd.AddCommand(cmd)
}

// newVolumeRestoreCmd is `lockstep volume restore`, registered by
// cmd_volume.go under its --json and client flags.
func newVolumeRestoreCmd(asJSON *bool) *cobra.Command {
	o := restoreOpts{asJSON: asJSON}
	cmd := &cobra.Command{
		Use:   "restore SERVICE/VOLUME --to TIME|MARKER [--plan] [--crash-consistent] [--yes]",
		Short: "Restore one volume of a service alone (breaks the service's consistency)",
		Long: `Restores one volume of a service in place to a marker or a time, stopping
and starting the apps that live on it. The service's other volumes stay as
they are, so the service is no longer consistent at one point in time: use
` + "`lockstep restore SERVICE`" + ` unless you need exactly this. --to, --plan,
--crash-consistent and --yes work as for ` + "`lockstep restore`" + `;
` + "`lockstep restore SERVICE --undo`" + ` undoes it.

Exit codes: 0 restored (or planned), 1 the restore failed or was refused,
2 usage error or no confirmation (not a terminal and no --yes).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service, _, ok := strings.Cut(args[0], "/")
			if !ok || service == "" {
				return withExit(exitUsage, fmt.Errorf("volume %q: want SERVICE/VOLUME", args[0]))
			}
			if o.to == "" {
				return withExit(exitUsage, errors.New("give --to TIME or --to MARKER"))
			}
			req, err := restoreRequest(o)
			if err != nil {
				return withExit(exitUsage, err)
			}
			req.Volume = args[0]
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: volume %q is restored alone: the other volumes of service %q stay as they are, so the service is no longer consistent at one point in time; `lockstep restore %s` restores it whole\n",
				args[0], service, service)
			return runInPlace(cmd, service, req, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "marker id or time to restore to")
	f.BoolVar(&o.plan, "plan", false, "print what the restore would do; change nothing")
	f.BoolVar(&o.crashConsistent, "crash-consistent", false, "restore to the time exactly")
	f.BoolVar(&o.yes, "yes", false, "restore without asking")
	return cmd
}

// restoreRequest reads --to: a time (read here, in the user's time zone)
// or else a marker id.
func restoreRequest(o restoreOpts) (api.RestoreRequest, error) {
	req := api.RestoreRequest{CrashConsistent: o.crashConsistent}
	t, err := restore.ParseTime(o.to, time.Now(), time.Local)
	switch {
	case err == nil:
		req.At = t.UTC().Format(time.RFC3339Nano)
	case looksLikeID(o.to):
		if o.crashConsistent {
			return req, fmt.Errorf("--crash-consistent needs --to TIME; %q is read as a marker id", o.to)
		}
		req.Marker = o.to
	default:
		return req, fmt.Errorf("--to: %w", err)
	}
	return req, nil
}

func looksLikeID(s string) bool {
	if s == "" || strings.HasPrefix(s, "-") || unicode.IsDigit(rune(s[0])) {
		return false
	}
	return !strings.ContainsFunc(s, unicode.IsSpace)
}

func runPlan(cmd *cobra.Command, service string, req api.RestoreRequest, o restoreOpts) error {
	c, err := clientOf(cmd)
	if err != nil {
		return err
	}
	p, err := c.RestorePlan(cmd.Context(), service, req)
	if err != nil {
		return withExit(exitFailure, err)
	}
	if *o.asJSON {
		return printJSON(cmd.OutOrStdout(), p)
	}
	return p.WriteText(cmd.OutOrStdout())
}

// runInPlace plans, asks (unless --yes), restores and reports.
func runInPlace(cmd *cobra.Command, service string, req api.RestoreRequest, o restoreOpts) error {
	if o.plan {
		return runPlan(cmd, service, req, o)
	}
	c, err := clientOf(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if !o.yes {
		p, err := c.RestorePlan(ctx, service, req)
		if err != nil {
			return withExit(exitFailure, err)
		}
		if err := p.WriteText(cmd.OutOrStdout()); err != nil {
			return err
		}
		what := fmt.Sprintf("Restore service %q in place? Its apps stop and %s of writes are rolled back", service, api.FormatBytes(p.Bytes))
		if err := confirm(cmd, what); err != nil {
			return err
		}
		// Restore to the point the plan showed, even if a newer marker
		// arrived while the user read it.
		if p.Marker != nil {
			req.Marker, req.At, req.CrashConsistent = p.Marker.ID, "", false
		} else {
			req.At, req.CrashConsistent = p.TargetTime.Format(time.RFC3339Nano), true
		}
	}
	res, err := follow(cmd, func(ctx context.Context, pr func(api.RestoreProgress)) (api.RestoreResult, error) {
		return c.Restore(ctx, service, req, pr)
	})
	return report(cmd, res, err, *o.asJSON)
}

func runUndo(cmd *cobra.Command, service string, o restoreOpts) error {
	c, err := clientOf(cmd)
	if err != nil {
		return err
	}
	if !o.yes {
		recs, err := c.Restores(cmd.Context(), service)
		if err != nil {
			return withExit(exitFailure, err)
		}
		last := "its newest restore"
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Kind != restore.KindUndo {
				last = "restore " + recs[i].ID
				if recs[i].UndoPoint != 0 {
					last += " (back to " + time.Unix(0, recs[i].UndoPoint).UTC().Format(time.RFC3339Nano) + ")"
				}
				break
			}
		}
		what := fmt.Sprintf("Undo %s of service %q? Its apps stop and every write since that restore is rolled back", last, service)
		if err := confirm(cmd, what); err != nil {
			return err
		}
	}
	res, err := follow(cmd, func(ctx context.Context, pr func(api.RestoreProgress)) (api.RestoreResult, error) {
		return c.Undo(ctx, service, pr)
	})
	return report(cmd, res, err, *o.asJSON)
}

func runResume(cmd *cobra.Command, service, id string, asJSON bool) error {
	c, err := clientOf(cmd)
	if err != nil {
		return err
	}
	if service != "" {
		rec, err := c.RestoreRecord(cmd.Context(), id)
		if err != nil {
			return withExit(exitFailure, err)
		}
		if rec.Service != service {
			return withExit(exitUsage, fmt.Errorf("restore %s is of service %q, not %q", id, rec.Service, service))
		}
	}
	res, err := follow(cmd, func(ctx context.Context, pr func(api.RestoreProgress)) (api.RestoreResult, error) {
		return c.Resume(ctx, id, pr)
	})
	return report(cmd, res, err, asJSON)
}

func runAsNew(cmd *cobra.Command, service string, req api.RestoreRequest, asJSON bool) error {
	c, err := clientOf(cmd)
	if err != nil {
		return err
	}
	res, err := follow(cmd, func(ctx context.Context, pr func(api.RestoreProgress)) (api.RestoreResult, error) {
		return c.Restore(ctx, service, req, pr)
	})
	if err != nil {
		return withExit(exitFailure, err)
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), res.AsNew)
	}
	w := cmd.OutOrStdout()
	p := res.AsNew.Plan
	at := "at " + p.TargetTime.Format(time.RFC3339Nano)
	if p.Marker != nil {
		at = "at marker " + p.Marker.ID + " (" + p.TargetTime.Format(time.RFC3339Nano) + ", " + p.Marker.Class + ")"
	}
	fmt.Fprintf(w, "service %q %s presented as new volumes; the service is untouched\n", service, at)
	for _, v := range res.AsNew.Volumes {
		fmt.Fprintf(w, "  %s -> %s\n    iqn:    %s\n    lun:    %d\n    portal: %s\n", v.Source, v.Name, v.IQN, v.LUN, v.Portal)
	}
	fmt.Fprintln(w, "Remove each with `lockstep volume unexpose IQN` (its volume is deleted with it).")
	return nil
}

// confirm asks on the terminal; without one it refuses with exitUsage.
func confirm(cmd *cobra.Command, question string) error {
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !isTTY(f) {
		return withExit(exitUsage, errors.New("refusing to restore in place without confirmation: stdin is not a terminal; check the plan above (or with --plan) and pass --yes"))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s [y/N] ", question)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return withExit(exitFailure, err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return withExit(exitFailure, errors.New("not confirmed; nothing changed"))
}

// isTTY reports whether f is a terminal (not just a character device:
// /dev/null is one too).
func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// follow runs a streamed restore, printing to stderr the steps that take
// more than a second.
func follow(cmd *cobra.Command, run func(context.Context, func(api.RestoreProgress)) (api.RestoreResult, error)) (api.RestoreResult, error) {
	pp := &progressPrinter{w: cmd.ErrOrStderr(), pending: map[string]*pendingStep{}, after: time.Second}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				pp.tick()
			}
		}
	}()
	res, err := run(cmd.Context(), pp.update)
	close(done)
	wg.Wait()
	return res, err
}

type pendingStep struct {
	p     api.RestoreProgress
	start time.Time
	shown bool
}

// progressPrinter shows a step once it has run for after, and its end.
type progressPrinter struct {
	w       io.Writer
	after   time.Duration
	mu      sync.Mutex
	pending map[string]*pendingStep
}

func stepName(p api.RestoreProgress) string {
	if p.Object == "" {
		return p.Step
	}
	return p.Step + " " + p.Object
}

func (pp *progressPrinter) update(p api.RestoreProgress) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	key := stepName(p)
	if !p.Done {
		pp.pending[key] = &pendingStep{p: p, start: time.Now()}
		return
	}
	s := pp.pending[key]
	delete(pp.pending, key)
	if s != nil && s.shown {
		fmt.Fprintf(pp.w, "[%d/%d] %s: %s after %s\n", p.N, p.Total, key, p.Outcome, time.Since(s.start).Round(100*time.Millisecond))
	}
}

func (pp *progressPrinter) tick() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	var due []*pendingStep
	for _, s := range pp.pending {
		if !s.shown && time.Since(s.start) >= pp.after {
			due = append(due, s)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].p.N < due[j].p.N })
	for _, s := range due {
		s.shown = true
		extra := ""
		if s.p.Bytes > 0 {
			extra = " (" + api.FormatBytes(s.p.Bytes) + ")"
		}
		fmt.Fprintf(pp.w, "[%d/%d] %s%s ...\n", s.p.N, s.p.Total, stepName(s.p), extra)
	}
}

// report prints how an in-place restore ended; a failure says what state
// the service is in and the commands that finish or undo it.
func report(cmd *cobra.Command, res api.RestoreResult, err error, asJSON bool) error {
	w := cmd.OutOrStdout()
	rec := res.Record
	if asJSON && rec != nil {
		if perr := printJSON(w, rec); perr != nil {
			return perr
		}
	} else if rec != nil {
		if perr := rec.WriteText(w); perr != nil {
			return perr
		}
	}
	if err == nil {
		return nil
	}
	if rec == nil || rec.Finished() {
		return withExit(exitFailure, err)
	}
	// The record printed above carries the error.
	ew := cmd.ErrOrStderr()
	if asJSON {
		fmt.Fprintf(ew, "lockstep: %v\n", err)
	}
	var rolled []string
	for _, v := range rec.Volumes {
		if _, ok := rec.Rolled[v]; ok {
			rolled = append(rolled, v)
		}
	}
	fmt.Fprintf(ew, "%s restore %s of service %q stopped part-way (%s):\n", rec.Kind, rec.ID, rec.Service, rec.State)
	fmt.Fprintf(ew, "  volumes rolled:     %s\n", listOrNone(rolled))
	fmt.Fprintf(ew, "  volumes not rolled: %s\n", listOrNone(rec.NotRolled()))
	fmt.Fprintf(ew, "  apps stopped:       %s\n", listOrNone(rec.Stopped))
	if rec.Fenced {
		fmt.Fprintln(ew, "  its volumes are fenced: the target refuses I/O to them")
	}
	fmt.Fprintf(ew, "  finish it:          lockstep restore --resume %s\n", rec.ID)
	fmt.Fprintf(ew, "  or undo it:         lockstep restore %s --undo\n", rec.Service)
	return withExit(exitFailure, errSilent)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, " ")
}
