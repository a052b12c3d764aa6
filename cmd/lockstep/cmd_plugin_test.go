package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-io/lockstep/plugins/builtin"
	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// runPlugin runs the CLI with every plugin-related flag reset before and
// after, since cobra keeps flag values between runs.
func runPlugin(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	reset := func() {
		pluginFlags.dataDir, pluginFlags.pluginDir, pluginFlags.sha256, pluginFlags.asJSON = "", "", "", false
		validateDataDir, validatePluginDir = "", ""
	}
	reset()
	defer reset()
	return run(t, args...)
}

// buildExamplePlugin builds examples/plugins/marker-file into dir.
func buildExamplePlugin(t *testing.T, dir, ldflags string) string {
	t.Helper()
	out := filepath.Join(dir, "marker-file")
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", ldflags, "github.com/lockstep-io/lockstep/examples/plugins/marker-file")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the example plugin: %v\n%s", err, b)
	}
	return out
}

func TestPluginInstallListInfoRemove(t *testing.T) {
	bin := buildExamplePlugin(t, t.TempDir(), "")
	sum, err := host.FileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	t.Setenv("LOCKSTEP_DATA", data)

	// A wrong checksum is refused and leaves nothing behind.
	wrong := strings.Repeat("0", 64)
	_, stderr, code := runPlugin(t, "plugin", "install", bin, "--sha256", wrong)
	if code != exitFailure {
		t.Fatalf("wrong sha256: code %d, %s", code, stderr)
	}
	out, _, code := runPlugin(t, "plugin", "list", "--json")
	var listed struct {
		Installed []host.Manifest `json:"installed"`
		Builtin   []string        `json:"builtin"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed.Installed) != 0 {
		t.Fatalf("after a refused install: code %d, %s", code, out)
	}

	out, stderr, code = runPlugin(t, "plugin", "install", bin, "--sha256", strings.ToUpper(sum))
	if code != 0 || !strings.Contains(out, "installed marker-file 0.1.0") {
		t.Fatalf("install: code %d\n%s\n%s", code, out, stderr)
	}
	if st, err := os.Stat(filepath.Join(data, "plugins", "marker-file")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", st, err)
	}

	out, _, code = runPlugin(t, "plugin", "list")
	if code != 0 || !strings.Contains(out, "marker-file  0.1.0") {
		t.Fatalf("list: code %d\n%s", code, out)
	}
	out, _, code = runPlugin(t, "plugin", "info", "marker-file", "--json")
	var man host.Manifest
	if code != 0 || json.Unmarshal([]byte(out), &man) != nil || man.SHA256 != sum || man.Protocol != 1 || man.Version != "0.1.0" {
		t.Fatalf("info: code %d\n%s", code, out)
	}

	// A policy that pins what is installed validates; one that pins
	// another version or checksum does not, and says what differs.
	pdir := t.TempDir()
	writePolicy := func(version, sha string) {
		t.Helper()
		policy := fmt.Sprintf(`plugin "marker-file" {
  source  = %q
  version = %q
  sha256  = %q
}

service "svc" {
  volume "data" {
    size = "1GiB"
  }
  app "marker-file" "m" {
    volumes    = ["data"]
    state_file = "/tmp/state"
  }
  consistency {
    every = "5m"
  }
  rpo {
    journal = "5m"
  }
}
`, bin, version, sha)
		if err := os.WriteFile(filepath.Join(pdir, "p.lockstep.hcl"), []byte(policy), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy("0.1.0", sum)
	out, stderr, code = runPlugin(t, "validate", pdir)
	if code != 0 {
		t.Fatalf("pinned policy: code %d\n%s\n%s", code, out, stderr)
	}
	writePolicy("0.2.0", strings.Repeat("a", 64))
	_, stderr, code = runPlugin(t, "validate", pdir)
	if code != exitFailure || !strings.Contains(stderr, `plugin "marker-file": the policy pins version "0.2.0", the installed plugin has "0.1.0"`) ||
		!strings.Contains(stderr, `the policy pins sha256 "aaaa`) {
		t.Fatalf("mismatched pins: code %d\n%s", code, stderr)
	}
	// The plugin's own schema is enforced: an attribute it does not know.
	writePolicy("0.1.0", sum)
	b, _ := os.ReadFile(filepath.Join(pdir, "p.lockstep.hcl"))
	os.WriteFile(filepath.Join(pdir, "p.lockstep.hcl"), []byte(strings.Replace(string(b), `state_file = "/tmp/state"`, `state_file = "relative"`, 1)), 0o644)
	_, stderr, code = runPlugin(t, "validate", pdir)
	if code != exitFailure || !strings.Contains(stderr, "state_file") {
		t.Fatalf("schema not enforced: code %d\n%s", code, stderr)
	}

	// The plugin's Validate runs too, and points at the attribute.
	writePolicy("0.1.0", sum)
	b, _ = os.ReadFile(filepath.Join(pdir, "p.lockstep.hcl"))
	os.WriteFile(filepath.Join(pdir, "p.lockstep.hcl"), []byte(strings.Replace(string(b), `state_file = "/tmp/state"`, `state_file = "/no/such/dir/state"`, 1)), 0o644)
	_, stderr, code = runPlugin(t, "validate", pdir)
	if code != exitFailure || !strings.Contains(stderr, "p.lockstep.hcl:13:5: Error: No such directory") {
		t.Fatalf("plugin's Validate: code %d\n%s", code, stderr)
	}

	_, _, code = runPlugin(t, "plugin", "remove", "marker-file")
	if code != 0 {
		t.Fatalf("remove: code %d", code)
	}
	if _, _, code = runPlugin(t, "plugin", "info", "marker-file"); code != exitFailure {
		t.Fatalf("info after remove: code %d", code)
	}
	// Not installed: the plugin block's source is used, pins still hold.
	writePolicy("0.1.0", sum)
	if out, stderr, code = runPlugin(t, "validate", pdir); code != 0 {
		t.Fatalf("from source: code %d\n%s\n%s", code, out, stderr)
	}
	writePolicy("0.2.0", sum)
	if _, stderr, code = runPlugin(t, "validate", pdir); code != exitFailure || !strings.Contains(stderr, `pins version "0.2.0"`) {
		t.Fatalf("from source, wrong version: code %d\n%s", code, stderr)
	}
	bin = filepath.Join(t.TempDir(), "gone")
	writePolicy("0.1.0", sum)
	if _, stderr, code = runPlugin(t, "validate", pdir); code != exitFailure || !strings.Contains(stderr, `plugin "marker-file" is not installed`) {
		t.Fatalf("no binary anywhere: code %d\n%s", code, stderr)
	}
}

func TestPluginUsage(t *testing.T) {
	t.Setenv("LOCKSTEP_DATA", "")
	if _, _, code := runPlugin(t, "plugin", "list"); code != exitUsage {
		t.Fatalf("no directory: code %d", code)
	}
	if _, _, code := runPlugin(t, "plugin", "serve-builtin", "no-such-plugin"); code != exitUsage {
		t.Fatalf("unknown builtin: code %d", code)
	}
}

// TestServeBuiltin launches built-ins the way the daemon does: the lockstep
// executable with the hidden `plugin serve-builtin NAME`, over gRPC.
func TestServeBuiltin(t *testing.T) {
	names := builtin.Names()
	if len(names) == 0 {
		t.Skip("no built-in plugin is registered yet")
	}
	exe := filepath.Join(t.TempDir(), "lockstep")
	if b, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("building lockstep: %v\n%s", err, b)
	}
	sum, err := host.FileSHA256(exe)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		c, err := host.New(host.Spec{Name: name, Path: exe, Args: []string{"plugin", "serve-builtin", name}, SHA256: sum}, host.Options{})
		if err != nil {
			t.Fatal(err)
		}
		in, err := c.Info(context.Background())
		c.Close()
		if err != nil || in.Name != name || in.Protocol != sdk.ProtocolVersion {
			t.Errorf("built-in %q: info %+v, %v", name, in, err)
		}
	}
}

// plugin info on a built-in shows its attributes without installing it.
func TestPluginInfoBuiltin(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := runPlugin(t, "plugin", "info", "mysql", "--plugin-dir", dir)
	if code != 0 {
		t.Fatalf("info mysql: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"(built in)", "ATTRIBUTE", "dsn", "(required)", "sensitive string"} {
		if !strings.Contains(out, want) {
			t.Errorf("info mysql lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runPlugin(t, "plugin", "info", "fsfreeze", "--plugin-dir", dir, "--json")
	var v struct {
		Builtin bool
		Schema  struct{ Attributes []struct{ Name string } }
	}
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || !v.Builtin || len(v.Schema.Attributes) == 0 {
		t.Fatalf("info fsfreeze --json: exit %d, %v: %s", code, err, out)
	}
	if _, _, code := runPlugin(t, "plugin", "info", "nosuch", "--plugin-dir", dir); code != 1 {
		t.Fatalf("info of an unknown plugin: exit %d, want 1", code)
	}
}
