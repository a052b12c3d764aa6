// Package builtin lists the plugins compiled into lockstep. The lockstep
// binary serves each over the same gRPC path as a vendor plugin (a hidden
// subcommand), so built-in and vendor plugins behave alike.
package builtin

import (
	"fmt"
	"os"
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

// ServeIfAsked serves the built-in plugin named by args when args is the
// hidden `plugin serve-builtin NAME` command line and exits; otherwise it
// returns. A test binary whose code launches built-ins through plugins/host
// calls it first in TestMain, since the host launches the running
// executable as it would launch lockstep.
func ServeIfAsked(args []string) {
	if len(args) != 4 || args[1] != "plugin" || args[2] != "serve-builtin" {
		return
	}
	p, ok := Lookup(args[3])
	if !ok {
		fmt.Fprintf(os.Stderr, "no built-in plugin %q\n", args[3])
		os.Exit(2)
	}
	sdk.Serve(p)
	os.Exit(0)
}
