package parse

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// testEnv is the environment fixtures resolve env() against.
var testEnv = map[string]string{
	"CHAP_SECRET":        "0123456789abcd",
	"CHAP_MUTUAL_SECRET": "abcd0123456789",
	"SHORT_SECRET":       "short",
	"LONG_SECRET":        "0123456789abcdefghij",
	"PG_DSN":             "host=/run/postgresql user=lockstep password=pw",
}

func testOptions() Options {
	return Options{
		LookupEnv: func(k string) (string, bool) { v, ok := testEnv[k]; return v, ok },
		ReadFile: func(p string) ([]byte, error) {
			return nil, fmt.Errorf("open %s: %w", p, os.ErrNotExist)
		},
	}
}

func parseString(t testing.TB, src string) *Result {
	t.Helper()
	return Parse([]Source{{Filename: "test.lockstep.hcl", Bytes: []byte(src)}}, testOptions())
}

func loadFile(t testing.TB, path string) *Result {
	t.Helper()
	res, err := Load([]string{path}, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func errorsOf(diags hcl.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			out = append(out, d)
		}
	}
	return out
}

func warningsOf(diags hcl.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagWarning {
			out = append(out, d)
		}
	}
	return out
}

func render(t testing.TB, res *Result) string {
	t.Helper()
	var b strings.Builder
	if err := res.WriteDiagnostics(&b, 0, false); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
