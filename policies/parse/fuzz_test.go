package parse

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and
// must return either a policy or at least one error, never both or neither.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/*/*.hcl")
	examples, _ := filepath.Glob("../../examples/*.hcl")
	for _, p := range append(seeds, examples...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(""))
	f.Add([]byte(`service "s" { consistency { schedule = "CRON_TZ=UTC" } }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		res := Parse([]Source{{Filename: "fuzz.hcl", Bytes: src}}, testOptions())
		if (res.Policy != nil) == res.Diagnostics.HasErrors() {
			t.Fatalf("policy %v with errors %v", res.Policy != nil, res.Diagnostics.HasErrors())
		}
		for _, d := range res.Diagnostics {
			if d.Severity == hcl.DiagError && d.Summary == "" {
				t.Fatalf("error without a summary: %#v", d)
			}
		}
		if err := res.WriteDiagnostics(io.Discard, 80, false); err != nil {
			t.Fatal(err)
		}
		if res.Policy != nil {
			Render(res.Policy)
		}
	})
}
