package parse

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{"20GiB": 20 << 30, "512B": 512, "1.5KiB": 1536, "1TiB": 1 << 40, "10GB": 10e9, " 4 MiB ": 4 << 20}
	for in, want := range good {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "20", "20gib", "20 gigs", "0GiB", "1.1B", "-1GiB", "99999999PiB", "GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	for _, n := range []int64{512, 1 << 30, 3 << 20, 1536} {
		if got, _ := parseSize(formatSize(n)); got != n {
			t.Errorf("formatSize(%d) = %q does not parse back", n, formatSize(n))
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{"30s": 30 * time.Second, "5m": 5 * time.Minute, "72h": 72 * time.Hour, "1h30m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1.5h": 90 * time.Minute, "500ms": 500 * time.Millisecond}
	for in, want := range good {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "5", "5 minutes", "-5m", "5y", "m", "1e3s", "999999999999w"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) accepted", in)
		}
	}
}

func TestTargetNames(t *testing.T) {
	if got := defaultTargetName("Web_Portal", "PG data"); got != "iqn.2026-11.io.lockstep:web-portal.pg-data" {
		t.Errorf("defaultTargetName = %q", got)
	}
	for _, ok := range []string{"iqn.2026-11.io.lockstep:a.b", "iqn.1993-08.org.debian:01:abc", "eui.02004567A425678D", "naa.52004567BA64678D"} {
		if err := checkISCSIName(ok); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"data", "iqn.2026-13.x:y", "iqn.26-11.x", "iqn.2026-11.-x:y", "eui.123", "iqn.2026-11.x:a b"} {
		if checkISCSIName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestInlinePassword(t *testing.T) {
	for s, want := range map[string]bool{
		"host=x user=y password=z":           true,
		"host=x password='z z'":              true,
		"postgres://u:p@h/db":                true,
		"host=x user=y":                      false,
		"postgres://u@h/db":                  false,
		"lockstep@tcp(db.example.com:3306)/": false,
	} {
		if got := inlinePasswordRE.MatchString(s); got != want {
			t.Errorf("%q: got %v, want %v", s, got, want)
		}
	}
}
