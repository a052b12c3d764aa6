package testenv

import "testing"

func TestInCI(t *testing.T) {
	t.Setenv("CI", "true")
	if !InCI() {
		t.Fatal("CI=true not detected")
	}
	t.Setenv("CI", "")
	if InCI() {
		t.Fatal("empty CI detected as CI")
	}
}
