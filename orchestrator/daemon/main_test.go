package daemon

import (
	"os"
	"testing"

	"github.com/lockstep-io/lockstep/plugins/builtin"
)

// TestMain lets the daemon's plugin host launch built-in plugins from the
// test binary, as it launches them from lockstep.
func TestMain(m *testing.M) {
	builtin.ServeIfAsked(os.Args)
	os.Exit(m.Run())
}
