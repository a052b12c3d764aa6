package host

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tarGz writes an archive holding files (name → content, executable when
// the name does not end in .txt).
func tarGz(t *testing.T, files map[string][]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin.tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for name, b := range files {
		mode := int64(0o755)
		if strings.HasSuffix(name, ".txt") {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	zw.Close()
	return path
}

func TestInstallTarGzAndReplace(t *testing.T) {
	bin, err := os.ReadFile(buildPlugin(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(t.TempDir(), testOptions(t))
	ctx := context.Background()
	man, err := m.Install(ctx, tarGz(t, map[string][]byte{"README.txt": []byte("hi"), "bin/marker-file": bin}), "")
	if err != nil {
		t.Fatal(err)
	}
	if man.Name != "marker-file" || man.Version != "0.1.0" {
		t.Fatalf("manifest %+v", man)
	}
	// Installing a new version replaces the old one.
	newer := buildPlugin(t, "-X main.version=0.2.0")
	if man, err = m.Install(ctx, newer, ""); err != nil || man.Version != "0.2.0" {
		t.Fatalf("%+v %v", man, err)
	}
	list, err := m.List()
	if err != nil || len(list) != 1 || list[0].Version != "0.2.0" {
		t.Fatalf("list %+v %v", list, err)
	}
	if ents, _ := os.ReadDir(m.Dir()); len(ents) != 2 {
		t.Fatalf("directory holds %v, want the binary and its manifest", ents)
	}
	if err := m.Remove("marker-file"); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("marker-file"); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestInstallRefusals(t *testing.T) {
	m := NewManager(t.TempDir(), testOptions(t))
	ctx := context.Background()
	if _, err := m.Install(ctx, tarGz(t, map[string][]byte{"a": []byte("x"), "b": []byte("y")}), ""); err == nil || !strings.Contains(err.Error(), "more than one executable") {
		t.Fatalf("two executables: %v", err)
	}
	if _, err := m.Install(ctx, tarGz(t, map[string][]byte{"a.txt": []byte("x")}), ""); err == nil || !strings.Contains(err.Error(), "no executable") {
		t.Fatalf("no executable: %v", err)
	}
	if _, err := m.Install(ctx, buildPlugin(t, ""), strings.Repeat("ab", 32)); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong sha256: %v", err)
	}
	// Not a plugin at all: a shell script fails the handshake.
	script := filepath.Join(t.TempDir(), "not-a-plugin")
	os.WriteFile(script, []byte("#!/bin/sh\necho hello\n"), 0o755)
	if _, err := m.Install(ctx, script, ""); err == nil {
		t.Fatal("a script installed as a plugin")
	}
	if ents, _ := os.ReadDir(m.Dir()); len(ents) != 0 {
		t.Fatalf("refused installs left %v", ents)
	}
}
