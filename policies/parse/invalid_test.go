package parse

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Each fixture in testdata/invalid holds one mistake, named after it, and
// must produce exactly one error: this summary, at this line and column.
var invalidFixtures = map[string]struct {
	summary   string
	line, col int
	detail    string // a fragment the detail must contain
}{
	"bad_block_size":                    {"Invalid block size", 4, 18, "512 or 4096"},
	"bad_cron":                          {"Invalid cron expression", 11, 16, "61"},
	"bad_duration":                      {"Invalid duration", 14, 15, "5 minutes"},
	"bad_on_quiesce_failure":            {"Invalid value", 12, 26, `Did you mean "crash_consistent"?`},
	"bad_size":                          {"Invalid size", 3, 18, "10 gigs"},
	"bad_target_name":                   {"Invalid target name", 4, 19, "not an iSCSI name"},
	"chap_secret_too_short":             {"CHAP secret too short", 8, 18, `env("SHORT_SECRET") is 5 bytes`},
	"conflicting_schedule":              {"Conflicting schedule", 12, 5, "not both"},
	"cron_never_fires":                  {"Invalid cron expression", 11, 16, "never fires"},
	"dependency_cycle":                  {"Dependency cycle", 12, 19, "db → web → db"},
	"duplicate_app":                     {"Duplicate app", 10, 18, "already has an app"},
	"duplicate_plugin":                  {"Duplicate plugin", 5, 8, "already declared"},
	"duplicate_service":                 {"Duplicate service", 18, 9, "already declared"},
	"duplicate_target_name":             {"Duplicate iSCSI target name", 19, 3, "iqn.2026-11.io.lockstep:web-portal.data"},
	"duplicate_volume":                  {"Duplicate volume", 6, 10, "already has a volume"},
	"invalid_name":                      {"Invalid name", 1, 9, "shop floor"},
	"missing_consistency":               {"Missing consistency block", 1, 1, "needs a consistency block"},
	"missing_required_plugin_attribute": {"Missing required argument", 6, 20, `"thaw" is required`},
	"missing_secret":                    {"Missing secret", 8, 15, `"SHOP_PG_DSN" is not set`},
	"relative_mountpoint":               {"Invalid path", 8, 33, "var/lib/shop"},
	"reserved_copy_block":               {"Not supported yet", 16, 3, "copy block is reserved"},
	"reserved_rpo_tier":                 {"Not supported yet", 15, 5, "rpo.cloud is reserved"},
	"retention_shorter_than_rpo":        {"Retention shorter than the RPO", 17, 15, "at least 5h"},
	"rpo_shorter_than_cron_gap":         {"RPO shorter than the schedule can meet", 15, 15, "59h10m"},
	"rpo_shorter_than_every":            {"RPO shorter than the schedule can meet", 14, 15, "every 10m"},
	"secret_in_clear":                   {"Secret written in clear", 8, 18, `env("NAME")`},
	"service_without_volumes":           {"Service without volumes", 1, 1, "no volume blocks"},
	"size_not_multiple_of_block_size":   {"Invalid size", 3, 18, "not a multiple of the block size 4096"},
	"syntax_error":                      {"Invalid block definition", 3, 25, ""},
	"unknown_attribute":                 {"Unsupported argument", 4, 5, `Did you mean "block_size"?`},
	"unknown_block":                     {"Unsupported block type", 1, 1, `Did you mean "service"?`},
	"unknown_dependency":                {"Unknown app", 11, 19, `Did you mean "db"?`},
	"unknown_plugin":                    {"Unknown plugin", 6, 7, `Did you mean "postgres"?`},
	"unknown_plugin_attribute":          {"Unsupported argument", 9, 5, `Did you mean "data_directory"?`},
	"unknown_volume":                    {"Unknown volume", 7, 16, `Did you mean "data"?`},
	"volume_of_another_service":         {"Volume of another service", 24, 16, `belongs to service "shop"`},
}

func TestInvalidFixtures(t *testing.T) {
	files, err := filepath.Glob("../testdata/invalid/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".lockstep.hcl")
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			want, ok := invalidFixtures[name]
			if !ok {
				t.Fatalf("fixture %s has no expectation in invalidFixtures", f)
			}
			res := loadFile(t, f)
			if res.Policy != nil {
				t.Fatalf("got a policy for an invalid fixture")
			}
			errs := errorsOf(res.Diagnostics)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1:\n%s", len(errs), render(t, res))
			}
			e := errs[0]
			if e.Summary != want.summary {
				t.Errorf("summary %q, want %q", e.Summary, want.summary)
			}
			if e.Subject == nil {
				t.Fatalf("error has no source range")
			}
			if e.Subject.Filename != f || e.Subject.Start.Line != want.line || e.Subject.Start.Column != want.col {
				t.Errorf("at %s:%d:%d, want %s:%d:%d", e.Subject.Filename, e.Subject.Start.Line, e.Subject.Start.Column, f, want.line, want.col)
			}
			if !strings.Contains(e.Detail, want.detail) {
				t.Errorf("detail %q lacks %q", e.Detail, want.detail)
			}
			// The rendered text names the position and shows the line.
			out := render(t, res)
			src, _ := os.ReadFile(f)
			line := strings.Split(string(src), "\n")[want.line-1]
			if !strings.Contains(out, f+":"+itoa(want.line)+":"+itoa(want.col)+": Error: "+want.summary) || !strings.Contains(out, strings.TrimSpace(line)) {
				t.Errorf("rendered diagnostic lacks position or snippet:\n%s", out)
			}
		})
	}
	for name := range invalidFixtures {
		if !seen[name] {
			t.Errorf("expectation %s has no fixture file", name)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// All problems of all files are reported together, not just the first.
func TestAllProblemsReportedTogether(t *testing.T) {
	var srcs []Source
	for _, name := range []string{"bad_size", "unknown_volume", "dependency_cycle"} {
		p := "../testdata/invalid/" + name + ".lockstep.hcl"
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		// Rename the service so that the files do not collide.
		srcs = append(srcs, Source{Filename: p, Bytes: []byte(strings.Replace(string(b), `service "shop"`, `service "`+strings.ReplaceAll(name, "_", "-")+`"`, 1))})
	}
	res := Parse(srcs, testOptions())
	got := map[string]bool{}
	for _, d := range errorsOf(res.Diagnostics) {
		got[d.Summary] = true
	}
	for _, want := range []string{"Invalid size", "Unknown volume", "Dependency cycle"} {
		if !got[want] {
			t.Errorf("missing %q among %v", want, got)
		}
	}
}
