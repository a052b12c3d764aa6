// Package parse reads Lockstep policies written in HCL: it decodes them
// against the declared schema, validates them across all files, and returns
// either the resolved model or every problem found, each as a diagnostic
// with its source range.
package parse

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/lockstep-io/lockstep/policies/model"
)

// Options are the outside world a policy is resolved against. Zero fields
// take the defaults: the built-in plugin table, the process environment and
// the file system.
type Options struct {
	Plugins   PluginSchemas
	LookupEnv func(name string) (string, bool)
	ReadFile  func(path string) ([]byte, error)
}

func (o Options) withDefaults() Options {
	if o.Plugins == nil {
		o.Plugins = Builtin{}
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.ReadFile == nil {
		o.ReadFile = readFileLimited
	}
	return o
}

func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSecretFile+1))
}

// Source is the text of one policy file.
type Source struct {
	Filename string
	Bytes    []byte
}

// Result is the outcome of reading a policy: Policy is set exactly when
// Diagnostics has no errors (it may still hold warnings).
type Result struct {
	Policy      *model.Policy
	Diagnostics hcl.Diagnostics
	// Files are the parsed files by name, for rendering snippets.
	Files map[string]*hcl.File
}

// WriteDiagnostics renders the diagnostics as text with source snippets,
// each headed by its file:line:column so that editors can jump to it.
func (r *Result) WriteDiagnostics(w io.Writer, width uint, color bool) error {
	tw := hcl.NewDiagnosticTextWriter(w, r.Files, width, color)
	for _, d := range r.Diagnostics {
		if s := d.Subject; s != nil {
			if _, err := fmt.Fprintf(w, "%s:%d:%d: ", s.Filename, s.Start.Line, s.Start.Column); err != nil {
				return err
			}
		}
		if err := tw.WriteDiagnostic(d); err != nil {
			return err
		}
	}
	return nil
}

// PolicyFiles expands paths into the policy files they name: a directory
// stands for its *.hcl files (*.lockstep.hcl included), not recursively.
func PolicyFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("policy path: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.hcl"))
		if err != nil {
			return nil, fmt.Errorf("policy directory %q: %w", p, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("policy directory %q holds no *.hcl files", p)
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	return files, nil
}

// Load reads the policy files under paths (files or directories).
func Load(paths []string, opts Options) (*Result, error) {
	files, err := PolicyFiles(paths)
	if err != nil {
		return nil, err
	}
	srcs := make([]Source, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy file: %w", err)
		}
		srcs = append(srcs, Source{Filename: f, Bytes: b})
	}
	return Parse(srcs, opts), nil
}

// Parse decodes and validates the given files together, as one policy.
func Parse(srcs []Source, opts Options) *Result {
	d := &decoder{opts: opts.withDefaults()}
	p := hclparse.NewParser()
	var bodies []fileBody
	for _, src := range srcs {
		f, diags := p.ParseHCL(src.Bytes, src.Filename)
		d.diags = append(d.diags, diags...)
		if f == nil || diags.HasErrors() {
			// Decoding a body with syntax errors only adds noise.
			continue
		}
		bodies = append(bodies, fileBody{name: src.Filename, body: f.Body})
	}
	pol := d.decode(bodies)
	sortDiagnostics(d.diags)
	r := &Result{Diagnostics: d.diags, Files: p.Files()}
	if !d.diags.HasErrors() {
		r.Policy = pol
	}
	return r
}

type fileBody struct {
	name string
	body hcl.Body
}

// sortDiagnostics orders diagnostics by file and position, so that output
// reads top to bottom whatever order the checks ran in.
func sortDiagnostics(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil && b == nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
}

// suggest returns a "did you mean" sentence for the candidate closest to
// name, or "".
func suggest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if dist := levenshtein(name, c); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 100 || len(rb) > 100 {
		return 1 << 20
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
