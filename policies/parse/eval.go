package parse

import (
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
)

// secretMark marks a value that came from env() or file(); src says which
// call ("env(\"PGPASSWORD\")") without the value.
type secretMark struct{ src string }

// maxSecretFile bounds what file() reads: secrets are short.
const maxSecretFile = 64 << 10

// evalContext returns the functions available in the policy file filename.
// file() paths are relative to the file's directory.
func (d *decoder) evalContext(filename string) *hcl.EvalContext {
	dir := filepath.Dir(filename)
	return &hcl.EvalContext{Functions: map[string]function.Function{
		"env": function.New(&function.Spec{
			Description: "Reads a secret from an environment variable.",
			Params:      []function.Parameter{{Name: "name", Type: cty.String}},
			Type:        function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				name := args[0].AsString()
				v, ok := d.opts.LookupEnv(name)
				if !ok {
					return cty.UnknownVal(cty.String), fmt.Errorf("environment variable %q is not set; export it before running lockstep", name)
				}
				if v == "" {
					return cty.UnknownVal(cty.String), fmt.Errorf("environment variable %q is empty", name)
				}
				return cty.StringVal(v).Mark(secretMark{fmt.Sprintf("env(%q)", name)}), nil
			},
		}),
		"file": function.New(&function.Spec{
			Description: "Reads a secret from a file, relative to the policy file; one trailing newline is dropped.",
			Params:      []function.Parameter{{Name: "path", Type: cty.String}},
			Type:        function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				p := args[0].AsString()
				full := p
				if !filepath.IsAbs(full) {
					full = filepath.Join(dir, p)
				}
				b, err := d.opts.ReadFile(full)
				if err != nil {
					return cty.UnknownVal(cty.String), fmt.Errorf("cannot read %q: %w", full, err)
				}
				if len(b) > maxSecretFile {
					return cty.UnknownVal(cty.String), fmt.Errorf("%q is larger than %d bytes; a secret file holds only the secret", full, maxSecretFile)
				}
				s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
				if s == "" {
					return cty.UnknownVal(cty.String), fmt.Errorf("%q is empty", full)
				}
				return cty.StringVal(s).Mark(secretMark{fmt.Sprintf("file(%q)", p)}), nil
			},
		}),
	}}
}

// value is an evaluated attribute: unmarked, known and not null.
type value struct {
	v       cty.Value
	rng     hcl.Range
	sources []string // env()/file() calls the value came from; nil when none
}

func (v value) secret() bool { return len(v.sources) > 0 }

func (v value) source() string { return strings.Join(v.sources, "+") }

// eval evaluates expr. It reports false, with diagnostics added, when the
// expression cannot be used.
func (d *decoder) eval(expr hcl.Expression, ctx *hcl.EvalContext, what string) (value, bool) {
	v, diags := expr.Value(ctx)
	d.addExprDiags(diags)
	if diags.HasErrors() {
		return value{}, false
	}
	v, marks := v.UnmarkDeep()
	out := value{v: v, rng: expr.Range()}
	for m := range marks.All() {
		if s, ok := m.(secretMark); ok {
			out.sources = append(out.sources, s.src)
		}
	}
	slices.Sort(out.sources)
	if !v.IsWhollyKnown() || v.IsNull() {
		d.errorf(expr.Range(), "Invalid value", "The value of %s must not be null.", what)
		return value{}, false
	}
	return out, true
}

// addExprDiags adds diagnostics of expression evaluation, renaming failed
// env() and file() calls to what they are for the user: a missing secret.
func (d *decoder) addExprDiags(diags hcl.Diagnostics) {
	for _, diag := range diags {
		if extra, ok := hcl.DiagnosticExtra[hclsyntax.FunctionCallDiagExtra](diag); ok {
			if fn := extra.CalledFunctionName(); (fn == "env" || fn == "file") && extra.FunctionCallError() != nil {
				diag.Summary = "Missing secret"
				diag.Detail = fmt.Sprintf("%s() failed: %s.", fn, extra.FunctionCallError())
			}
		}
		d.diags = append(d.diags, diag)
	}
}

func (d *decoder) typeError(rng hcl.Range, what, want string) {
	d.errorf(rng, "Incorrect attribute value type", "Inappropriate value for %s: %s required.", what, want)
}

func (d *decoder) str(expr hcl.Expression, ctx *hcl.EvalContext, what string) (string, value, bool) {
	v, ok := d.eval(expr, ctx, what)
	if !ok {
		return "", v, false
	}
	s, err := convert.Convert(v.v, cty.String)
	if err != nil || v.v.Type().IsCollectionType() || v.v.Type().IsTupleType() || v.v.Type().IsObjectType() {
		d.typeError(expr.Range(), what, "string")
		return "", v, false
	}
	return s.AsString(), v, true
}

// strList evaluates a list of strings, element by element where the list is
// written literally, so that each element keeps its own range.
func (d *decoder) strList(expr hcl.Expression, ctx *hcl.EvalContext, what string) ([]string, []value, bool) {
	if elems, diags := hcl.ExprList(expr); !diags.HasErrors() {
		out, vals, ok := []string{}, []value{}, true
		for _, e := range elems {
			s, v, eok := d.str(e, ctx, "each element of "+what)
			ok = ok && eok
			out, vals = append(out, s), append(vals, v)
		}
		return out, vals, ok
	}
	v, ok := d.eval(expr, ctx, what)
	if !ok {
		return nil, nil, false
	}
	if t := v.v.Type(); !(t.IsListType() || t.IsTupleType() || t.IsSetType()) {
		d.typeError(expr.Range(), what, "list of string")
		return nil, nil, false
	}
	l, err := convert.Convert(v.v, cty.List(cty.String))
	if err != nil {
		d.typeError(expr.Range(), what, "list of string")
		return nil, nil, false
	}
	var out []string
	var vals []value
	for _, e := range l.AsValueSlice() {
		out = append(out, e.AsString())
		vals = append(vals, value{v: e, rng: expr.Range(), sources: v.sources})
	}
	if out == nil {
		out = []string{}
	}
	return out, vals, true
}

// integer evaluates a whole number in [lo, hi].
func (d *decoder) integer(expr hcl.Expression, ctx *hcl.EvalContext, what string, lo, hi int64) (int64, bool) {
	v, ok := d.eval(expr, ctx, what)
	if !ok {
		return 0, false
	}
	n, err := convert.Convert(v.v, cty.Number)
	if err != nil {
		d.typeError(expr.Range(), what, "number")
		return 0, false
	}
	bf := n.AsBigFloat()
	if !bf.IsInt() {
		d.errorf(expr.Range(), "Invalid number", "The value of %s must be a whole number.", what)
		return 0, false
	}
	i, acc := bf.Int64()
	if acc != big.Exact || i < lo || i > hi {
		d.errorf(expr.Range(), "Invalid number", "The value of %s must be between %d and %d.", what, lo, hi)
		return 0, false
	}
	return i, true
}

func (d *decoder) boolean(expr hcl.Expression, ctx *hcl.EvalContext, what string) (bool, bool) {
	v, ok := d.eval(expr, ctx, what)
	if !ok {
		return false, false
	}
	b, err := convert.Convert(v.v, cty.Bool)
	if err != nil {
		d.typeError(expr.Range(), what, "bool")
		return false, false
	}
	return b.True(), true
}
