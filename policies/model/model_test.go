package model

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestSecretNeverPrints(t *testing.T) {
	s := NewSecret("hunter2-hunter2", `env("X")`)
	app := &App{Plugin: "mysql", Name: "db", Config: map[string]any{"password": s}}
	v := &Volume{Name: "v", CHAP: &CHAP{Username: "u", Secret: s, MutualUsername: "m", MutualSecret: s}}
	outs := []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), fmt.Sprintf("%+v", *v.CHAP)}
	for _, x := range []any{s, app, v} {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(b))
	}
	for _, o := range outs {
		if strings.Contains(o, "hunter2") {
			t.Errorf("secret leaked: %s", o)
		}
		if !strings.Contains(o, Redacted) {
			t.Errorf("no %q in %s", Redacted, o)
		}
	}
	if s.Reveal() != "hunter2-hunter2" || s.Source() != `env("X")` {
		t.Errorf("Reveal/Source = %q/%q", s.Reveal(), s.Source())
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		72 * time.Hour:             "72h",
		90 * time.Second:           "1m30s",
		5 * time.Minute:            "5m",
		time.Hour + 30*time.Second: "1h0m30s",
		500 * time.Millisecond:     "500ms",
		time.Hour + 2*time.Minute:  "1h2m",
		30 * time.Second:           "30s",
		0:                          "0s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestDurationsMarshalAsPolicyStrings(t *testing.T) {
	s := &Service{Name: "s", Consistency: Consistency{Every: 30 * time.Second, QuiesceTimeout: 10 * time.Second, OnQuiesceFailure: CrashConsistent, MaxGap: 30 * time.Second},
		RPO: RPO{Journal: 5 * time.Minute}, Retention: Retention{Journal: 72 * time.Hour, KeepDaily: 7}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"every":"30s"`, `"journal":"5m"`, `"journal":"72h"`, `"keep_daily":7`, `"volumes":[]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}
