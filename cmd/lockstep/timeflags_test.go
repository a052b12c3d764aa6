package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseSinceFlag(t *testing.T) {
	for in, ago := range map[string]time.Duration{
		"24h": 24 * time.Hour, "-24h": 24 * time.Hour, "15m ago": 15 * time.Minute, "-2d": 48 * time.Hour,
	} {
		got, err := parseSinceFlag(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if d := time.Since(got) - ago; d < 0 || d > time.Minute {
			t.Errorf("%q: %s ago, want %s", in, time.Since(got), ago)
		}
	}
	y := time.Now().AddDate(0, 0, -1)
	got, err := parseSinceFlag("yesterday 14:00")
	if err != nil || got.Day() != y.Day() || got.Hour() != 14 || got.Location() != time.Local {
		t.Errorf("yesterday 14:00: %v %v", got, err)
	}
	if got, err := parseSinceFlag("2026-11-23T14:00:00Z"); err != nil || !got.Equal(time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)) {
		t.Errorf("RFC 3339: %v %v", got, err)
	}
	if _, err := parseSinceFlag("last tuesday"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("bad time: %v", err)
	}
}

func TestResolvePoint(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at, m, err := resolvePoint("m-0123abcd", now)
	if err != nil || at != "" || m != "m-0123abcd" {
		t.Errorf("marker: %q %q %v", at, m, err)
	}
	at, m, err = resolvePoint("-15m", now)
	if err != nil || m != "" || at != "2026-12-02T11:45:00Z" {
		t.Errorf("-15m: %q %q %v", at, m, err)
	}
	at, _, err = resolvePoint("1795000000000000000", now)
	if err != nil || at != "1795000000000000000" {
		t.Errorf("ns: %q %v", at, err)
	}
	if _, _, err := resolvePoint("soon", now); err == nil || !strings.Contains(err.Error(), "--at") {
		t.Errorf("bad point: %v", err)
	}
}
