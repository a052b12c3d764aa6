package parse

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lockstep-io/lockstep/policies/model"
)

// Reference writes the policy language reference in Markdown, from the same
// tables the decoder uses (docs/policy-reference.md is this output).
func Reference(plugins PluginSchemas) string {
	var b strings.Builder
	b.WriteString(`# Policy language reference

<!-- Generated from policies/parse/schema.go and plugins.go by
     ` + "`go test ./policies/parse -run TestReferenceUpToDate -update`" + `; do not edit. -->

A policy directory holds any number of ` + "`*.lockstep.hcl`" + ` (or ` + "`*.hcl`" + `) files,
read together as one policy. ` + "`lockstep validate`" + ` reports every problem of every
file at once; ` + "`lockstep policy show`" + ` prints the effective policy.

Value types: *string*; *list(string)*; *number*; *duration*, a string of
numbers with units ` + "`ms`, `s`, `m`, `h`, `d`, `w`" + ` (` + "`\"30s\"`, `\"1h30m\"`, `\"7d\"`" + `);
*size*, a string with a unit (` + "`\"20GiB\"`" + `); *cron*, a cron expression;
*secret*, a string that must come from ` + "`env(\"NAME\")`" + ` or ` + "`file(\"path\")`" + `
(a literal is an error).

## Functions

- ` + "`env(\"NAME\")`" + ` — the value of environment variable NAME when lockstep reads
  the policy. Unset or empty is an error ("Missing secret").
- ` + "`file(\"path\")`" + ` — the content of a file, relative to the policy file, with
  one trailing newline removed; at most 64 KiB. Unreadable or empty is an error.

Values from either function are secrets: ` + "`lockstep policy show`" + ` prints them as
` + "`(redacted)`" + `. They may be used inside strings, as in
` + "`dsn = \"host=db user=app password=${env(\"PGPASSWORD\")}\"`" + `.

`)
	var walk func(spec *blockSpec, path string, level int)
	walk = func(spec *blockSpec, path string, level int) {
		if spec.Type != "" {
			fmt.Fprintf(&b, "%s `%s`\n\n", strings.Repeat("#", min(level, 6)), path)
			header := spec.Type
			for _, l := range spec.Labels {
				header += ` "` + strings.ToUpper(l) + `"`
			}
			fmt.Fprintf(&b, "```hcl\n%s { ... }\n```\n\n%s\n\n", header, spec.Doc)
			switch {
			case spec.Reserved != "":
				fmt.Fprintf(&b, "Reserved: %s; the block is rejected for now.\n\n", spec.Reserved)
			case spec.Required:
				b.WriteString("Required, once.\n\n")
			case spec.Multiple:
				b.WriteString("Any number.\n\n")
			default:
				b.WriteString("Optional, at most once.\n\n")
			}
			if len(spec.Attrs) > 0 {
				b.WriteString("| attribute | type | required | default | description |\n|---|---|---|---|---|\n")
				for _, a := range spec.Attrs {
					doc := a.Doc
					if a.Reserved != "" {
						doc += " Reserved: " + a.Reserved + "."
					}
					fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", a.Name, a.Type, yesNo(a.Required), code(a.Default), doc)
				}
				b.WriteString("\n")
			}
		}
		for _, c := range spec.Blocks {
			p := c.Type
			if path != "" {
				p = path + "." + c.Type
			}
			walk(c, p, level+1)
		}
	}
	walk(rootSpec, "", 1)

	b.WriteString("## Plugins\n\nThe attributes below go in an `app \"PLUGIN\" \"NAME\"` block, beside `volumes` and `depends_on`.\n\n")
	names := plugins.Names()
	sort.Strings(names)
	for _, n := range names {
		s, ok := plugins.AppSchema(n, nil)
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "### Plugin `%s`\n\n%s\n\n| attribute | type | required | default | description |\n|---|---|---|---|---|\n", n, s.Doc)
		for _, a := range s.Attributes {
			doc := a.Doc
			if len(a.OneOf) > 0 {
				doc += " One of " + code(strings.Join(a.OneOf, "`, `")) + "."
			}
			if a.Absolute {
				doc += " Absolute path."
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", a.Name, a.Type, yesNo(a.Required), code(defaultText(a.Default)), doc)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}

func defaultText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case time.Duration:
		return model.FormatDuration(v)
	default:
		return fmt.Sprint(v)
	}
}
