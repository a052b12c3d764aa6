package chain

import "testing"

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`:    "/tmp/a b",
		`/plain`:         "/plain",
		`/tab\011x\134y`: "/tab\tx\\y",
		`/short\04`:      `/short\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestQemuOpt(t *testing.T) {
	if got := qemuOpt("/a,b,,c"); got != "/a,,b,,,,c" {
		t.Fatalf("got %q", got)
	}
}

func TestAlive(t *testing.T) {
	if !alive(1) {
		t.Fatal("pid 1 reported dead")
	}
	if alive(1 << 30) {
		t.Fatal("impossible pid reported alive")
	}
}
