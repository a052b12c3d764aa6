// Package testenv decides what a test does when a real component it needs is
// missing: outside CI it skips with the reason, under CI=true it fails,
// because a skipped test there would hide a missing install step.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t outside CI and fails it under CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required component unavailable under CI: "+format, args...)
	}
	t.Skipf("skipping: "+format+" (run scripts/install-deps.sh, or set CI=true to make this a failure)", args...)
}

// LookPath returns the path of a required executable, or marks the test
// unavailable.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "%s not found in PATH", name)
	}
	return p
}

// Root marks the test unavailable unless it runs as root (mounts, loop devices).
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}
