package demo

import (
	"os"
	"testing"

	"github.com/lockstep-io/lockstep/plugins/builtin"
)

// TestMain lets the daemon the demo starts launch its built-in plugins from
// the test binary, as it launches them from lockstep.
func TestMain(m *testing.M) {
	builtin.ServeIfAsked(os.Args)
	os.Exit(m.Run())
}
