package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	tok, created, err := LoadOrCreateToken(dir)
	if err != nil || !created || len(tok) != 64 {
		t.Fatalf("first start: %q %v %v", tok, created, err)
	}
	path := filepath.Join(dir, TokenFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi.Mode(), err)
	}
	again, created, err := LoadOrCreateToken(dir)
	if err != nil || created || again != tok {
		t.Fatalf("second start: %q %v %v", again, created, err)
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("data directory holds %d entries", len(ents))
	}
	os.Chmod(path, 0o640)
	if _, _, err := LoadOrCreateToken(dir); err == nil || !strings.Contains(err.Error(), "others may have read it") {
		t.Fatalf("group-readable token: %v", err)
	}
	os.WriteFile(path, []byte("\n"), 0o600)
	os.Chmod(path, 0o600)
	if _, _, err := LoadOrCreateToken(dir); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token: %v", err)
	}
}

func TestTokenEqual(t *testing.T) {
	if !TokenEqual("abc", "abc") || TokenEqual("abc", "abd") || TokenEqual("", "abc") || TokenEqual("abcd", "abc") {
		t.Fatal("TokenEqual")
	}
}

func TestLocate(t *testing.T) {
	dir := t.TempDir()
	if _, err := Locate("", "", dir); err == nil || !strings.Contains(err.Error(), "--data") {
		t.Fatalf("no token: %v", err)
	}
	if _, _, err := LoadOrCreateToken(dir); err != nil {
		t.Fatal(err)
	}
	c, err := Locate("", "", dir)
	if err != nil || c.Addr() != DefaultAddr {
		t.Fatalf("default address: %v %v", c, err)
	}
	os.WriteFile(filepath.Join(dir, AddrFile), []byte("127.0.0.1:9999\n"), 0o644)
	if c, _ := Locate("", "", dir); c.Addr() != "127.0.0.1:9999" {
		t.Fatalf("address file ignored: %s", c.Addr())
	}
	if c, _ := Locate("10.0.0.1:1", "t", "/nonexistent"); c.Addr() != "10.0.0.1:1" || c.token != "t" {
		t.Fatalf("flags ignored: %+v", c)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
