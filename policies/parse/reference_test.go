package parse

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/policy-reference.md")

const referencePath = "../../docs/policy-reference.md"

// TestReferenceUpToDate fails when the schema changed but the reference page
// was not regenerated.
func TestReferenceUpToDate(t *testing.T) {
	want := Reference(Builtin{})
	if *update {
		if err := os.WriteFile(referencePath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date: run go test ./policies/parse -run TestReferenceUpToDate -update", referencePath)
	}
}

// Every block and attribute the decoder accepts appears in the reference.
func TestReferenceCoversSchema(t *testing.T) {
	doc := Reference(Builtin{})
	var walk func(s *blockSpec)
	walk = func(s *blockSpec) {
		if s.Type != "" && !strings.Contains(doc, "```hcl\n"+s.Type) {
			t.Errorf("block %s missing", s.Type)
		}
		for _, a := range s.Attrs {
			if !strings.Contains(doc, "| `"+a.Name+"` |") {
				t.Errorf("attribute %s.%s missing", s.Type, a.Name)
			}
		}
		for _, c := range s.Blocks {
			walk(c)
		}
	}
	walk(rootSpec)
	for _, n := range (Builtin{}).Names() {
		s, _ := (Builtin{}).AppSchema(n, nil)
		for _, a := range s.Attributes {
			if !strings.Contains(doc, "| `"+a.Name+"` |") {
				t.Errorf("plugin %s attribute %s missing", n, a.Name)
			}
		}
	}
}
