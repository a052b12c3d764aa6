package parse

import (
	"errors"
	"testing"
	"time"
)

func TestMaxGap(t *testing.T) {
	for expr, want := range map[string]time.Duration{
		"* * * * *":             time.Minute,
		"*/15 * * * *":          15 * time.Minute,
		"5 * * * *":             time.Hour,
		"0 2 * * *":             24 * time.Hour,
		"0 9,17 * * *":          16 * time.Hour,
		"*/10 7-19 * * 1-5":     59*time.Hour + 10*time.Minute, // Friday 19:50 to Monday 07:00
		"*/30 * * * * *":        30 * time.Second,
		"@hourly":               time.Hour,
		"@weekly":               7 * 24 * time.Hour,
		"@every 90s":            90 * time.Second,
		"0 0 1 * *":             31 * 24 * time.Hour,
		"0 0 29 2 *":            4 * 366 * 24 * time.Hour, // every leap year; 2032-02-29 - 2028-02-29
		"CRON_TZ=UTC 0 3 * * *": 24 * time.Hour,
	} {
		s, err := parseCron(expr)
		if err != nil {
			t.Errorf("%q: %v", expr, err)
			continue
		}
		got, err := maxGap(s)
		if expr == "0 0 29 2 *" {
			want = time.Date(2032, 2, 29, 0, 0, 0, 0, time.UTC).Sub(time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC))
		}
		if err != nil || got != want {
			t.Errorf("maxGap(%q) = %v, %v; want %v", expr, got, err, want)
		}
	}
}

// The shortcut in specMaxGap must agree with walking every activation.
func TestMaxGapMatchesBruteForce(t *testing.T) {
	for _, expr := range []string{"*/7 3-5 * * *", "0 12 * * 1,3", "15,45 */5 1-10 * *", "0 0 * 2 *", "0 6 1,15 * *"} {
		s, err := parseCron(expr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := maxGap(s)
		if err != nil {
			t.Fatal(err)
		}
		var want time.Duration
		t0 := s.Next(gapStart.Add(-time.Second))
		end := gapStart.Add(gapSpan)
		for t0.Before(end) {
			t1 := s.Next(t0)
			want = max(want, t1.Sub(t0))
			t0 = t1
		}
		if got != want {
			t.Errorf("%q: shortcut %v, brute force %v", expr, got, want)
		}
	}
}

func TestCronErrors(t *testing.T) {
	for _, expr := range []string{"", "61 * * * *", "* * *", "CRON_TZ=Nowhere/Land * * * * *", "CRON_TZ=UTC", "TZ=", "@fortnightly"} {
		if _, err := parseCron(expr); err == nil {
			t.Errorf("%q accepted", expr)
		}
	}
	for _, expr := range []string{"0 0 30 2 *", "0 0 31 4 *"} {
		s, err := parseCron(expr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := maxGap(s); !errors.Is(err, errNeverFires) {
			t.Errorf("%q: %v, want errNeverFires", expr, err)
		}
	}
}
