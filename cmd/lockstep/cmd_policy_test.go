package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// run executes the root command with args and returns stdout, stderr and
// the exit code main would use.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&errb)
	rootCmd.SetArgs(args)
	// A test that ran a command under a context it then cancelled leaves
	// that context on rootCmd; every run starts afresh.
	rootCmd.SetContext(context.Background())
	validateJSON, policyShowJSON = false, false
	err := rootCmd.Execute()
	code := 0
	if err != nil {
		code = 1
		var ec exitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

func setExampleEnv(t *testing.T) {
	for k, v := range map[string]string{
		"PORTAL_DB_CHAP_SECRET": "portal-chap-01", "PORTAL_PG_DSN": "host=db1 user=lockstep",
		"MAIL_CHAP_SECRET": "mail-chap-0001", "MAIL_CHAP_MUTUAL_SECRET": "mail-mutual-01",
		"MAIL_IMAP_PASSWORD": "imap-pass", "ERP_MARIADB_PASSWORD": "mariadb-pass",
	} {
		t.Setenv(k, v)
	}
}

func TestValidateExamples(t *testing.T) {
	setExampleEnv(t)
	out, stderr, code := run(t, "validate", "../../examples")
	if code != 0 || !strings.Contains(out, "3 service(s)") {
		t.Fatalf("code %d\n%s\n%s", code, out, stderr)
	}
}

func TestValidateInvalid(t *testing.T) {
	f := "../../policies/testdata/invalid/unknown_volume.lockstep.hcl"
	_, stderr, code := run(t, "validate", f)
	if code != exitFailure || !strings.Contains(stderr, f+":7:16: Error: Unknown volume") || !strings.Contains(stderr, `volumes = ["dta"]`) {
		t.Fatalf("code %d, stderr:\n%s", code, stderr)
	}
	out, _, code := run(t, "validate", "--json", f)
	var res struct {
		Valid       bool
		ErrorCount  int `json:"error_count"`
		Diagnostics []struct {
			Severity, Summary string
			Range             struct{ Start struct{ Line, Column int } }
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if code != exitFailure || res.Valid || res.ErrorCount != 1 || res.Diagnostics[0].Summary != "Unknown volume" || res.Diagnostics[0].Range.Start.Line != 7 || res.Diagnostics[0].Range.Start.Column != 16 {
		t.Fatalf("code %d, json %+v", code, res)
	}
	if _, _, code := run(t, "validate", "--nope"); code == 0 {
		t.Error("unknown flag accepted")
	}
}

func TestPolicyShow(t *testing.T) {
	setExampleEnv(t)
	out, stderr, code := run(t, "policy", "show", "../../examples/mail.lockstep.hcl")
	if code != 0 || !strings.Contains(out, `service "mail"`) || !regexp.MustCompile(`imap_password\s+= "\(redacted\)"`).MatchString(out) || strings.Contains(out, "imap-pass") {
		t.Fatalf("code %d\n%s\n%s", code, out, stderr)
	}
	out, _, code = run(t, "policy", "show", "--json", "../../examples")
	if code != 0 || !strings.Contains(out, `"target_name": "iqn.2026-11.io.lockstep:web-portal.pgdata"`) || strings.Contains(out, "portal-chap-01") {
		t.Fatalf("code %d\n%s", code, out)
	}
}

func TestFmt(t *testing.T) {
	dir := t.TempDir()
	messy := "service \"s\" {\n  volume \"v\" {\n      size = \"1GiB\"\n    block_size=4096\n  }\n}\n"
	p := filepath.Join(dir, "s.lockstep.hcl")
	if err := os.WriteFile(p, []byte(messy), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, code := run(t, "fmt", "-check", dir)
	if code != exitFailure || !strings.Contains(out, p) {
		t.Fatalf("-check: code %d out %q", code, out)
	}
	if b, _ := os.ReadFile(p); string(b) != messy {
		t.Fatal("-check changed the file")
	}
	if _, _, code = run(t, "fmt", dir); code != 0 {
		t.Fatalf("fmt: code %d", code)
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "    size       = \"1GiB\"\n    block_size = 4096\n") {
		t.Fatalf("not formatted:\n%s", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode changed to %v", st.Mode())
	}
	if out, _, code = run(t, "fmt", "--check", dir); code != 0 || out != "" {
		t.Fatalf("second -check: code %d out %q", code, out)
	}
	if err := os.WriteFile(p, []byte("service {"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := run(t, "fmt", dir); code != exitFailure || !strings.Contains(stderr, "Error:") {
		t.Fatalf("syntax error: code %d %s", code, stderr)
	}
	if _, _, code := run(t, "fmt", "-bogus", dir); code != exitUsage {
		t.Fatalf("bad flag: code %d", code)
	}
}

// The examples are formatted canonically.
func TestExamplesFormatted(t *testing.T) {
	if out, _, code := run(t, "fmt", "-check", "../../examples"); code != 0 {
		t.Fatalf("examples need lockstep fmt:\n%s", out)
	}
}
