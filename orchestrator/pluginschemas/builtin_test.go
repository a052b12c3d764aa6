package pluginschemas

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/lockstep-io/lockstep/plugins/builtin"
	"github.com/lockstep-io/lockstep/policies/parse"
)

// The parser checks built-in app bodies against its own table (policies/
// may not import plugins/); this keeps that table and what each built-in
// publishes over ConfigSchema from drifting apart.
func TestBuiltinSchemasMatchParserTable(t *testing.T) {
	names := builtin.Names()
	if want := (parse.Builtin{}).Names(); !slices.Equal(names, want) {
		t.Fatalf("registered built-ins %v, parser table has %v", names, want)
	}
	for _, name := range names {
		p, _ := builtin.Lookup(name)
		sc, err := p.ConfigSchema(context.Background())
		if err != nil {
			t.Fatalf("%s: ConfigSchema: %v", name, err)
		}
		got := convert(name, sc)
		want, ok := parse.Builtin{}.AppSchema(name, nil)
		if !ok {
			t.Fatalf("%s: not in the parser's table", name)
		}
		if got.Doc != want.Doc {
			t.Errorf("%s: doc\n plugin %q\n parser %q", name, got.Doc, want.Doc)
		}
		if len(got.Attributes) != len(want.Attributes) {
			t.Errorf("%s: plugin publishes %d attributes, parser table has %d", name, len(got.Attributes), len(want.Attributes))
		}
		byName := map[string]parse.PluginAttr{}
		for _, a := range want.Attributes {
			byName[a.Name] = a
		}
		for _, a := range got.Attributes {
			w, ok := byName[a.Name]
			if !ok {
				t.Errorf("%s: attribute %q is published by the plugin, missing from the parser table", name, a.Name)
				continue
			}
			if !reflect.DeepEqual(a, w) {
				t.Errorf("%s.%s:\n plugin %+v\n parser %+v", name, a.Name, a, w)
			}
		}
	}
}
