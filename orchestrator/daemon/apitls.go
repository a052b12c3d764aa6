package daemon

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/lockstep-io/lockstep/orchestrator/agent"
)

// serveTLS wraps the API listener in TLS with a certificate the daemon's
// CA issues now for every name and address the machine answers on: the CLI
// trusts DATA/pki/ca.crt (or the file LOCKSTEP_CA names), so a token never
// crosses the network in clear and no one can pose as the daemon.
func (d *Daemon) serveTLS() error {
	pki, err := agent.LoadOrCreatePKI(filepath.Join(d.cfg.DataDir, PKIDir))
	if err != nil {
		return fmt.Errorf("api tls: %w", err)
	}
	cert, err := pki.ServerCert(apiHosts(d.apiL.Addr()))
	if err != nil {
		return fmt.Errorf("api tls: %w", err)
	}
	d.apiL = tls.NewListener(d.apiL, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	d.apiTLS = true
	d.log.Info("api serves https", "listen", d.apiL.Addr().String(), "ca", filepath.Join(d.cfg.DataDir, PKIDir, agent.CACertFile), "ca_fingerprint", pki.Fingerprint())
	return nil
}

// apiHosts are the names a client may reach the API by: localhost, the
// loopback addresses, the host name, and the listener's address, or every
// address of the machine when it listens on all of them.
func apiHosts(a net.Addr) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return hosts
	}
	if !ta.IP.IsUnspecified() {
		return append(hosts, ta.IP.String())
	}
	for _, ip := range hostIPs() {
		hosts = append(hosts, ip.String())
	}
	return hosts
}

// URL is the API's base URL as the CLI uses it (DATA/api.addr): host:port,
// with https:// when it serves TLS.
func (d *Daemon) URL() string {
	if d.apiTLS {
		return "https://" + d.Addr()
	}
	return d.Addr()
}
