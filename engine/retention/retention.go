// Package retention decides which consistency markers stay restorable once
// they leave the journal window: grandfather-father-son rules over markers,
// as restic's forget applies them to snapshots.
package retention

import (
	"fmt"
	"sort"
	"time"
)

// Policy is a service's retention.
type Policy struct {
	// Window keeps every write for this long; any point inside it is
	// restorable.
	Window time.Duration
	// Keep the newest marker of each of the last N hours, days, ISO
	// weeks, months and years that have one.
	KeepHourly, KeepDaily, KeepWeekly, KeepMonthly, KeepYearly int
	// Location in which periods are counted (default UTC).
	Location *time.Location
}

// Point is a marker as retention sees it.
type Point struct {
	ID  string
	TS  int64 // Unix nanoseconds
	App bool  // application-consistent
}

// Decision is what a fold should do for one service.
type Decision struct {
	// Through: everything at or before it leaves the journal window.
	Through int64
	// Keep lists the markers older than Through to keep, oldest first.
	Keep []Point
	// Expire lists the markers older than Through that go.
	Expire []Point
	// Reasons says, per kept marker ID, which rules keep it.
	Reasons map[string][]string
}

// Decide applies p at now to points. Within each period the newest
// application-consistent marker is kept; a crash-consistent one only when
// the period has no application-consistent marker.
func Decide(now time.Time, p Policy, points []Point) Decision {
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}
	d := Decision{Through: now.Add(-p.Window).UnixNano(), Reasons: map[string][]string{}}
	pts := append([]Point(nil), points...)
	sort.Slice(pts, func(i, j int) bool { return pts[i].TS > pts[j].TS })
	rules := []struct {
		name string
		n    int
		key  func(time.Time) string
	}{
		{"hourly", p.KeepHourly, func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{"daily", p.KeepDaily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{"weekly", p.KeepWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.KeepMonthly, func(t time.Time) string { return t.Format("2006-01") }},
		{"yearly", p.KeepYearly, func(t time.Time) string { return t.Format("2006") }},
	}
	for _, r := range rules {
		if r.n <= 0 {
			continue
		}
		// best[bucket] is the chosen point of each period, newest periods first.
		var order []string
		best := map[string]Point{}
		for _, pt := range pts {
			k := r.key(time.Unix(0, pt.TS).In(loc))
			cur, seen := best[k]
			if !seen {
				order = append(order, k)
				best[k] = pt
				continue
			}
			if !cur.App && pt.App {
				best[k] = pt // an older app marker beats a newer crash one
			}
		}
		for i, k := range order {
			if i >= r.n {
				break
			}
			pt := best[k]
			d.Reasons[pt.ID] = append(d.Reasons[pt.ID], r.name)
		}
	}
	for i := len(pts) - 1; i >= 0; i-- {
		pt := pts[i]
		if pt.TS > d.Through {
			continue
		}
		if len(d.Reasons[pt.ID]) > 0 {
			d.Keep = append(d.Keep, pt)
		} else {
			d.Expire = append(d.Expire, pt)
		}
	}
	for id := range d.Reasons {
		found := false
		for _, pt := range d.Keep {
			found = found || pt.ID == id
		}
		if !found {
			delete(d.Reasons, id) // inside the window: kept anyway
		}
	}
	return d
}
