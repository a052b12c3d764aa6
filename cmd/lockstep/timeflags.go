package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/restore"
)

// parseSinceFlag reads --since: a bare duration (24h) means that long ago;
// anything else is a time as restore --to takes it (-15m, "15m ago", -2d,
// "yesterday 14:00", RFC 3339), read in the local time zone.
func parseSinceFlag(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	now := time.Now()
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d.Abs()), nil
	}
	t, err := restore.ParseTime(s, now, time.Local)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since: %w, or a duration (24h: that long ago)", err)
	}
	return t, nil
}

// resolvePoint reads --at of volume expose: a marker id (m-…), Unix
// nanoseconds, or a time as restore --to takes it. Times are resolved here,
// in the caller's time zone, and sent to the daemon as RFC 3339.
func resolvePoint(s string, now time.Time) (at, marker string, err error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", "", nil
	case strings.HasPrefix(s, "m-"):
		return "", s, nil
	}
	if _, err := strconv.ParseInt(s, 10, 64); err == nil {
		return s, "", nil
	}
	t, err := restore.ParseTime(s, now, time.Local)
	if err != nil {
		return "", "", fmt.Errorf("--at: %w, a marker id (m-…) or Unix nanoseconds", err)
	}
	return t.Format(time.RFC3339Nano), "", nil
}
