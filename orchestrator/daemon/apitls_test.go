package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-io/lockstep/orchestrator/agent"
	"github.com/lockstep-io/lockstep/orchestrator/api"
)

// With APITLS the API speaks HTTPS only, under a certificate of the
// daemon's CA: the CLI's Locate finds https:// in api.addr and trusts
// DATA/pki/ca.crt; plain HTTP and a client trusting another CA are refused.
func TestAPITLS(t *testing.T) {
	d := startDaemon(t, "", policy(shopHCL), func(c *Config) { c.APITLS = true })
	if got := filepath.Join(PKIDir, agent.CACertFile); got != api.CAFile {
		t.Fatalf("the daemon keeps its CA in %s, the client looks in %s", got, api.CAFile)
	}
	ctx := context.Background()
	var addr []byte
	var err error
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
		if addr, err = os.ReadFile(filepath.Join(d.dir, api.AddrFile)); err == nil {
			break // Serve writes it as it starts
		}
	}
	if err != nil || !strings.HasPrefix(string(addr), "https://") {
		t.Fatalf("api.addr %q (%v), want https://", addr, err)
	}
	c, err := api.Locate("", "", d.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("status over https: %v", err)
	}
	if _, err := api.New(d.Addr(), d.Token()).Status(ctx); err == nil {
		t.Fatal("plain HTTP answered by an HTTPS API")
	}
	other, err := agent.LoadOrCreatePKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := api.NewTLS(d.Addr(), d.Token(), other.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := impostor.Status(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client trusting another CA: %v, want a certificate error", err)
	}
	// Elsewhere, LOCKSTEP_CA names a copy of the CA certificate.
	t.Setenv("LOCKSTEP_CA", filepath.Join(d.dir, api.CAFile))
	remote, err := api.Locate("https://"+d.Addr(), d.Token(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Status(ctx); err != nil {
		t.Fatalf("status with LOCKSTEP_CA: %v", err)
	}
	t.Setenv("LOCKSTEP_CA", filepath.Join(t.TempDir(), "missing.crt"))
	if _, err := api.Locate("https://"+d.Addr(), d.Token(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "LOCKSTEP_CA") {
		t.Fatalf("https without a CA file: %v", err)
	}
}
