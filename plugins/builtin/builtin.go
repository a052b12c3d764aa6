// Package builtin lists the plugins compiled into lockstep. The lockstep
// binary serves each over the same gRPC path as a vendor plugin (a hidden
// subcommand), so built-in and vendor plugins behave alike.
package builtin

import (
	"sort"

	"github.com/lockstep-io/lockstep/plugins/builtin/exec"
	"github.com/lockstep-io/lockstep/plugins/builtin/fsfreeze"
	"github.com/lockstep-io/lockstep/plugins/builtin/mail"
	"github.com/lockstep-io/lockstep/plugins/builtin/mysql"
	"github.com/lockstep-io/lockstep/plugins/builtin/postgres"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// registry maps a built-in plugin's name to its constructor.
var registry = map[string]func() sdk.Plugin{
	"exec":     exec.New,
	"fsfreeze": fsfreeze.New,
	"mail":     mail.New,
	"mysql":    mysql.New,
	"postgres": postgres.New,
}

// Lookup returns a new instance of the built-in plugin called name.
func Lookup(name string) (sdk.Plugin, bool) {
	f, ok := registry[name]
	if !ok {
		return nil, false
	}
	return f(), true
}

// Names lists the built-in plugins, sorted.
func Names() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
