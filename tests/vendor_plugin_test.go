package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A vendor plugin installed with `lockstep plugin install` is what the
// daemon launches for apps that declare it: apply accepts the policy
// against the plugin's own schema and pins, a marker freezes and thaws it
// and carries its evidence, and a pin the installed build does not match
// is refused at apply.
func TestVendorPluginThroughDaemonBinary(t *testing.T) {
	bin := lockstep(t)
	dir, work := t.TempDir(), t.TempDir()
	plugin := filepath.Join(work, "marker-file")
	if out, err := exec.Command("go", "build", "-o", plugin, "../examples/plugins/marker-file").CombinedOutput(); err != nil {
		t.Fatalf("build example plugin: %v\n%s", err, out)
	}
	d := "--data=" + dir
	mustRun(t, bin, 0, "plugin", "install", plugin, d)
	var man struct{ Version, SHA256 string }
	if err := json.Unmarshal([]byte(mustRun(t, bin, 0, "plugin", "info", "marker-file", "--json", d)), &man); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(work, "app.state")
	pol := func(version string) string {
		return `plugin "marker-file" {
  source  = "` + plugin + `"
  version = "` + version + `"
  sha256  = "` + man.SHA256 + `"
}

service "vendor" {
  volume "data" {
    size = "8MiB"
  }
  app "marker-file" "m" {
    volumes    = ["data"]
    state_file = "` + state + `"
  }
  consistency {
    every = "1h"
  }
  rpo {
    journal = "2h"
  }
}
`
	}
	srv := serveBin(t, bin, dir)
	out, code := runBin(t, bin, "apply", writePolicy(t, pol("9.9.9")), d)
	if code == 0 || !strings.Contains(out, "marker-file") || !strings.Contains(out, "9.9.9") {
		t.Fatalf("apply with a version pin the installed plugin does not match: exit %d\n%s", code, out)
	}
	mustRun(t, bin, 0, "apply", writePolicy(t, pol(man.Version)), d)
	var m struct {
		Class string
		Apps  []struct {
			Froze, Thawed bool
			Evidence      json.RawMessage
		}
	}
	out = mustRun(t, bin, 0, "mark", "vendor", d, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	if m.Class != "app" || len(m.Apps) != 1 || !m.Apps[0].Froze || !m.Apps[0].Thawed || len(m.Apps[0].Evidence) < 3 {
		t.Fatalf("marker through the installed vendor plugin:\n%s\n%s", out, srv.logs.String())
	}
	b, err := os.ReadFile(state)
	if err != nil || strings.TrimSpace(string(b)) != "thawed" {
		t.Fatalf("app state after the marker: %q, %v", b, err)
	}
	srv.stop(t)
}
