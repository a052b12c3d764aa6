package retention

import (
	"fmt"
	"testing"
	"time"
)

func TestDecideGFS(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var pts []Point
	// One app marker every 30 minutes for 40 days, plus a crash marker at
	// :15 of every hour.
	for i := 0; i < 40*48; i++ {
		ts := now.Add(-time.Duration(i) * 30 * time.Minute)
		pts = append(pts, Point{ID: fmt.Sprintf("a%d", i), TS: ts.UnixNano(), App: true})
		if i%2 == 0 {
			pts = append(pts, Point{ID: fmt.Sprintf("c%d", i), TS: ts.Add(15 * time.Minute).UnixNano()})
		}
	}
	d := Decide(now, Policy{Window: 72 * time.Hour, KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 2}, pts)
	if want := now.Add(-72 * time.Hour).UnixNano(); d.Through != want {
		t.Fatalf("through %d, want %d", d.Through, want)
	}
	// Hourly rules fall inside the 72h window; daily 7 reach 4 days past
	// it; weekly and monthly reach further.
	for _, k := range d.Keep {
		if k.TS > d.Through {
			t.Fatalf("kept point %s is inside the window", k.ID)
		}
		if k.ID[0] != 'a' {
			t.Fatalf("kept crash marker %s although its period has app markers", k.ID)
		}
	}
	days := map[string]bool{}
	for _, k := range d.Keep {
		for _, r := range d.Reasons[k.ID] {
			if r == "daily" {
				days[time.Unix(0, k.TS).UTC().Format("2006-01-02")] = true
			}
		}
	}
	// Days 2026-11-23 .. 11-17 are the 7 newest; those older than the window
	// (11-20 and before: 11-20 partially) are kept for the daily rule.
	for _, day := range []string{"2026-11-17", "2026-11-18", "2026-11-19"} {
		if !days[day] {
			t.Fatalf("daily rule did not keep %s: %v", day, days)
		}
	}
	if days["2026-11-16"] {
		t.Fatal("daily rule kept an 8th day")
	}
	if len(d.Keep)+len(d.Expire) != countOlder(pts, d.Through) {
		t.Fatal("every point older than the window is either kept or expired")
	}
	if len(d.Keep) > 7+4+2 {
		t.Fatalf("kept %d points, more than the rules allow", len(d.Keep))
	}
}

func countOlder(pts []Point, through int64) int {
	n := 0
	for _, p := range pts {
		if p.TS <= through {
			n++
		}
	}
	return n
}

func TestCrashMarkerKeptWhenPeriodHasNoAppMarker(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	pts := []Point{
		{ID: "old-crash", TS: now.Add(-50 * time.Hour).UnixNano()},
		{ID: "older-app", TS: now.Add(-75 * time.Hour).UnixNano(), App: true},
		{ID: "newer-crash", TS: now.Add(-74 * time.Hour).UnixNano()},
	}
	d := Decide(now, Policy{Window: 24 * time.Hour, KeepDaily: 5}, pts)
	kept := map[string]bool{}
	for _, k := range d.Keep {
		kept[k.ID] = true
	}
	// 11-21 has only a crash marker: kept. 11-20 has both: the app one wins.
	if !kept["old-crash"] || !kept["older-app"] || kept["newer-crash"] {
		t.Fatalf("kept %v", kept)
	}
}
