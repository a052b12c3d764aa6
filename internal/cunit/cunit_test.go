package cunit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParse(t *testing.T) {
	out := "  Test: A ...passed\n  Test: B ...\n[SKIPPED] no\npassed\n  Test: C ...FAILED\n  Test: D ...\n"
	got := Parse(out)
	want := map[string]string{"A": "pass", "B": "skip", "C": "fail", "D": "fail"}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
}

func TestReadExpected(t *testing.T) {
	p := filepath.Join(t.TempDir(), "e")
	os.WriteFile(p, []byte("# c\nA\tpass\n\nB\tskip\n"), 0o600)
	got, err := ReadExpected(p)
	if err != nil || got["A"] != "pass" || got["B"] != "skip" || len(got) != 2 {
		t.Fatalf("%v %v", got, err)
	}
	os.WriteFile(p, []byte("A pass\n"), 0o600)
	if _, err := ReadExpected(p); err == nil {
		t.Fatal("bad line accepted")
	}
}

func TestSuites(t *testing.T) {
	got := Suites("ALL\nALL.Read10\n  ALL.Write10\nALL.X.Y\nSCSI.Read10\n", "ALL")
	if len(got) != 2 || got[0] != "Read10" || got[1] != "Write10" {
		t.Fatalf("%v", got)
	}
}
