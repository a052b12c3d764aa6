package restore

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteText prints the plan for a terminal.
func (p *Plan) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "restore plan for service %q (%s; nothing has changed)\n", p.Service, p.Kind)
	switch {
	case p.Marker != nil:
		fmt.Fprintf(&b, "  target     marker %s at %s, class %s\n", p.Marker.ID, p.TargetTime.Format(time.RFC3339Nano), p.Marker.Class)
		if len(p.Marker.Evidence) > 0 {
			fmt.Fprintf(&b, "  evidence   %s\n", p.Marker.Evidence)
		}
		if !p.Requested.IsZero() {
			fmt.Fprintf(&b, "  requested  %s (the marker is %s earlier)\n", p.Requested.UTC().Format(time.RFC3339Nano), p.Distance.Round(time.Millisecond))
		}
	default:
		fmt.Fprintf(&b, "  target     %s exactly (crash-consistent: apps recover as after a power loss)\n", p.TargetTime.Format(time.RFC3339Nano))
	}
	for _, v := range p.Volumes {
		fmt.Fprintf(&b, "  volume     %-32s %s to roll back\n", v.Name, bytesText(v.Bytes))
	}
	fmt.Fprintf(&b, "  stop       %s\n", orNone(p.Stop))
	fmt.Fprintf(&b, "  start      %s\n", orNone(p.Start))
	fmt.Fprintf(&b, "  estimate   %s (%s in all)\n", p.Estimate.Round(time.Second), bytesText(p.Bytes))
	for _, s := range p.Warnings {
		fmt.Fprintf(&b, "  warning    %s\n", s)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText prints the record for a terminal.
func (r *Record) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", r.Summary())
	if r.Marker != nil {
		fmt.Fprintf(&b, "  target     marker %s at %s\n", r.Marker.ID, fmtTS(r.Target))
	} else {
		fmt.Fprintf(&b, "  target     %s\n", fmtTS(r.Target))
	}
	for _, v := range r.Volumes {
		if rv, ok := r.Rolled[v]; ok {
			fmt.Fprintf(&b, "  rolled     %-32s %s\n", v, bytesText(rv.Bytes))
		}
	}
	if len(r.Healthy) > 0 {
		fmt.Fprintf(&b, "  healthy    %s\n", strings.Join(r.Healthy, " "))
	}
	if r.UndoPoint != 0 {
		fmt.Fprintf(&b, "  undo point %s (lockstep restore %s --undo)\n", fmtTS(r.UndoPoint), r.Service)
	}
	fmt.Fprintf(&b, "  took       %s\n", r.Duration.Round(time.Millisecond))
	for _, s := range r.Warnings {
		fmt.Fprintf(&b, "  warning    %s\n", s)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  error      %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(no apps)"
	}
	return strings.Join(s, ", ")
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
