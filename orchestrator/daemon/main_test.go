package daemon

import (
	"fmt"
	"os"
	"testing"

	"github.com/lockstep-io/lockstep/plugins/builtin"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// TestMain lets the daemon's plugin host launch built-in plugins from the
// test binary, as it launches them from lockstep: `plugin serve-builtin
// NAME`.
func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "plugin" && os.Args[2] == "serve-builtin" {
		p, ok := builtin.Lookup(os.Args[3])
		if !ok {
			fmt.Fprintf(os.Stderr, "no built-in plugin %q\n", os.Args[3])
			os.Exit(2)
		}
		sdk.Serve(p)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
